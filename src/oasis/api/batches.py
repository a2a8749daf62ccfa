"""Batches."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from oasis.api.deps import ContainerDep, PageDep, PrincipalDep
from oasis.api.lists import dict_list_body
from oasis.protocol.extensions import CreateBatchRequest

router = APIRouter(tags=["Batch"])


@router.post("/batches")
async def create_batch(
    body: CreateBatchRequest, request: Request, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.batches.create(
        principal.project_id,
        input_file_id=body.input_file_id,
        endpoint=body.endpoint,
        completion_window=body.completion_window,
        metadata=body.metadata,
        output_expires_after=body.output_expires_after.seconds if body.output_expires_after else None,
        base_url=str(request.base_url),
    )


@router.get("/batches")
async def list_batches(container: ContainerDep, principal: PrincipalDep, page: PageDep) -> dict[str, Any]:
    return dict_list_body(await container.batches.list_batches(principal.project_id, page))


@router.get("/batches/{batch_id}")
async def retrieve_batch(batch_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.batches.retrieve(principal.project_id, batch_id)


@router.post("/batches/{batch_id}/cancel")
async def cancel_batch(batch_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.batches.cancel(principal.project_id, batch_id)
