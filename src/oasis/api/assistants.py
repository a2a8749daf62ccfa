"""Assistants."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from oasis.api.deps import ContainerDep, PageDep, PrincipalDep
from oasis.api.lists import dict_list_body
from oasis.protocol.assistants import CreateAssistantRequest, ModifyAssistantRequest

router = APIRouter(tags=["Assistants"])


@router.post("/assistants")
async def create_assistant(
    body: CreateAssistantRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.assistants.create(principal.project_id, body)


@router.get("/assistants")
async def list_assistants(container: ContainerDep, principal: PrincipalDep, page: PageDep) -> dict[str, Any]:
    return dict_list_body(await container.assistants.list_assistants(principal.project_id, page))


@router.get("/assistants/{assistant_id}")
async def retrieve_assistant(assistant_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.assistants.retrieve(principal.project_id, assistant_id)


@router.post("/assistants/{assistant_id}")
async def modify_assistant(
    assistant_id: str, body: ModifyAssistantRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.assistants.modify(principal.project_id, assistant_id, body)


@router.delete("/assistants/{assistant_id}")
async def delete_assistant(assistant_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.assistants.delete(principal.project_id, assistant_id)
