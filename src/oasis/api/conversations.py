"""Conversations of the Responses API (after the 2.0.0 spec): create, retrieve, update, delete, and their items."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from oasis.api.deps import ContainerDep, IncludeDep, PageDep, PrincipalDep
from oasis.api.lists import dict_list_body
from oasis.protocol.responses import AddItemsRequest, CreateConversationRequest, UpdateConversationRequest
from oasis.storage.pagination import Page

router = APIRouter(tags=["Conversations"])


@router.post("/conversations")
async def create_conversation(
    body: CreateConversationRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.conversations.create(principal.project_id, body.items, body.metadata)


@router.get("/conversations/{conversation_id}")
async def retrieve_conversation(
    conversation_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.conversations.retrieve(principal.project_id, conversation_id)


@router.post("/conversations/{conversation_id}")
async def update_conversation(
    conversation_id: str, body: UpdateConversationRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.conversations.update(principal.project_id, conversation_id, body.metadata)


@router.delete("/conversations/{conversation_id}")
async def delete_conversation(conversation_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.conversations.delete(principal.project_id, conversation_id)


@router.post("/conversations/{conversation_id}/items")
async def add_items(
    conversation_id: str, body: AddItemsRequest, container: ContainerDep, principal: PrincipalDep, include: IncludeDep
) -> dict[str, Any]:
    added = await container.conversations.add_items(principal.project_id, conversation_id, body.items, include)
    return dict_list_body(Page(added, has_more=False))


@router.get("/conversations/{conversation_id}/items")
async def list_items(
    conversation_id: str, container: ContainerDep, principal: PrincipalDep, page: PageDep, include: IncludeDep
) -> dict[str, Any]:
    return dict_list_body(
        await container.conversations.list_items(principal.project_id, conversation_id, page, include)
    )


@router.get("/conversations/{conversation_id}/items/{item_id}")
async def retrieve_item(
    conversation_id: str, item_id: str, container: ContainerDep, principal: PrincipalDep, include: IncludeDep
) -> dict[str, Any]:
    return await container.conversations.retrieve_item(principal.project_id, conversation_id, item_id, include)


@router.delete("/conversations/{conversation_id}/items/{item_id}")
async def delete_item(
    conversation_id: str, item_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.conversations.delete_item(principal.project_id, conversation_id, item_id)
