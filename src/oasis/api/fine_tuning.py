"""Fine-tuning."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from oasis.api.deps import ContainerDep, PrincipalDep
from oasis.api.lists import dict_list_body
from oasis.protocol.extensions import CreateFineTuningJobRequest
from oasis.services.fine_tuning.service import metadata_filter
from oasis.storage.pagination import PageRequest

router = APIRouter(tags=["Fine-tuning"])

# OpenAI's fine-tuning lists take `after` and `limit`, newest first; the jobs' list also `metadata[KEY]=VALUE`.
Limit = Annotated[int, Query(ge=1, le=100)]


@router.post("/fine_tuning/jobs")
async def create_fine_tuning_job(
    body: CreateFineTuningJobRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.fine_tuning.create(principal.project_id, body.model_dump(mode="json", exclude_none=True))


@router.get("/fine_tuning/jobs")
async def list_fine_tuning_jobs(
    request: Request, container: ContainerDep, principal: PrincipalDep, after: str | None = None, limit: Limit = 20
) -> dict[str, Any]:
    page = PageRequest(limit=limit, after=after)
    metadata = metadata_filter(request.query_params.multi_items())
    return dict_list_body(await container.fine_tuning.list_jobs(principal.project_id, page, metadata))


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}")
async def retrieve_fine_tuning_job(
    fine_tuning_job_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.fine_tuning.retrieve(principal.project_id, fine_tuning_job_id)


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}/events")
async def list_fine_tuning_events(
    fine_tuning_job_id: str,
    container: ContainerDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: Limit = 20,
) -> dict[str, Any]:
    page = PageRequest(limit=limit, after=after)
    return dict_list_body(await container.fine_tuning.list_events(principal.project_id, fine_tuning_job_id, page))


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/cancel")
async def cancel_fine_tuning_job(
    fine_tuning_job_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.fine_tuning.cancel(principal.project_id, fine_tuning_job_id)


# Newer SDKs' `jobs.pause()` and `jobs.resume()` (after the 2.0.0 spec).
@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/pause")
async def pause_fine_tuning_job(
    fine_tuning_job_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.fine_tuning.pause(principal.project_id, fine_tuning_job_id)


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/resume")
async def resume_fine_tuning_job(
    fine_tuning_job_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.fine_tuning.resume(principal.project_id, fine_tuning_job_id)


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints")
async def list_fine_tuning_checkpoints(
    fine_tuning_job_id: str,
    container: ContainerDep,
    principal: PrincipalDep,
    after: str | None = None,
    limit: Limit = 10,
) -> dict[str, Any]:
    page = PageRequest(limit=limit, after=after)
    return dict_list_body(await container.fine_tuning.list_checkpoints(principal.project_id, fine_tuning_job_id, page))
