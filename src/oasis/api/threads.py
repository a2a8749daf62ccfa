"""Threads and their messages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from oasis.api.deps import ContainerDep, PageDep, PrincipalDep
from oasis.api.lists import dict_list_body
from oasis.protocol.assistants import (
    CreateMessageRequest,
    CreateThreadRequest,
    ModifyMessageRequest,
    ModifyThreadRequest,
)

router = APIRouter(tags=["Assistants"])


@router.post("/threads")
async def create_thread(
    container: ContainerDep, principal: PrincipalDep, body: CreateThreadRequest | None = None
) -> dict[str, Any]:
    return await container.threads.create(principal.project_id, body or CreateThreadRequest())


@router.get("/threads/{thread_id}")
async def retrieve_thread(thread_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.threads.retrieve(principal.project_id, thread_id)


@router.post("/threads/{thread_id}")
async def modify_thread(
    thread_id: str, body: ModifyThreadRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.threads.modify(principal.project_id, thread_id, body)


@router.delete("/threads/{thread_id}")
async def delete_thread(thread_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.threads.delete(principal.project_id, thread_id)


@router.post("/threads/{thread_id}/messages")
async def create_message(
    thread_id: str, body: CreateMessageRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.threads.create_message(principal.project_id, thread_id, body)


@router.get("/threads/{thread_id}/messages")
async def list_messages(
    thread_id: str, container: ContainerDep, principal: PrincipalDep, page: PageDep, run_id: str | None = None
) -> dict[str, Any]:
    return dict_list_body(await container.threads.list_messages(principal.project_id, thread_id, page, run_id))


@router.get("/threads/{thread_id}/messages/{message_id}")
async def retrieve_message(
    thread_id: str, message_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.threads.retrieve_message(principal.project_id, thread_id, message_id)


@router.post("/threads/{thread_id}/messages/{message_id}")
async def modify_message(
    thread_id: str, message_id: str, body: ModifyMessageRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.threads.modify_message(principal.project_id, thread_id, message_id, body)


@router.delete("/threads/{thread_id}/messages/{message_id}")
async def delete_message(
    thread_id: str, message_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.threads.delete_message(principal.project_id, thread_id, message_id)
