"""Runs and run steps. `stream: true` answers with the Assistants event stream; polled reads tell the SDK's
pollers how soon to look again."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, StreamingResponse

from oasis.api.deps import ContainerDep, IncludeDep, PageDep, PrincipalDep
from oasis.api.lists import dict_list_body
from oasis.api.sse import assistant_events_response
from oasis.protocol.assistants import (
    CreateRunRequest,
    CreateThreadAndRunRequest,
    ModifyRunRequest,
    SubmitToolOutputsRequest,
)

router = APIRouter(tags=["Assistants"])


# The SDK's create_and_poll and friends wait this long between reads (their default is a second).
POLL_AFTER_MS = "100"


async def _answer(result: Any) -> JSONResponse | StreamingResponse:
    if isinstance(result, dict):
        return JSONResponse(result, headers={"openai-poll-after-ms": POLL_AFTER_MS})
    return await assistant_events_response(result)


@router.post("/threads/runs", response_model=None)
async def create_thread_and_run(
    body: CreateThreadAndRunRequest, container: ContainerDep, principal: PrincipalDep
) -> JSONResponse | StreamingResponse:
    return await _answer(await container.runs.create_thread_and_run(principal.project_id, body))


@router.post("/threads/{thread_id}/runs", response_model=None)
async def create_run(
    thread_id: str, body: CreateRunRequest, container: ContainerDep, principal: PrincipalDep, include: IncludeDep
) -> JSONResponse | StreamingResponse:
    return await _answer(await container.runs.create(principal.project_id, thread_id, body, include))


@router.get("/threads/{thread_id}/runs")
async def list_runs(thread_id: str, container: ContainerDep, principal: PrincipalDep, page: PageDep) -> dict[str, Any]:
    return dict_list_body(await container.runs.list_runs(principal.project_id, thread_id, page))


@router.get("/threads/{thread_id}/runs/{run_id}")
async def retrieve_run(
    thread_id: str, run_id: str, container: ContainerDep, principal: PrincipalDep, response: Response
) -> dict[str, Any]:
    response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return await container.runs.retrieve(principal.project_id, thread_id, run_id)


@router.post("/threads/{thread_id}/runs/{run_id}")
async def modify_run(
    thread_id: str, run_id: str, body: ModifyRunRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.runs.modify(principal.project_id, thread_id, run_id, body)


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(
    thread_id: str, run_id: str, container: ContainerDep, principal: PrincipalDep, response: Response
) -> dict[str, Any]:
    response.headers["openai-poll-after-ms"] = POLL_AFTER_MS
    return await container.runs.cancel(principal.project_id, thread_id, run_id)


@router.post("/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", response_model=None)
async def submit_tool_outputs(
    thread_id: str, run_id: str, body: SubmitToolOutputsRequest, container: ContainerDep, principal: PrincipalDep
) -> JSONResponse | StreamingResponse:
    return await _answer(await container.runs.submit_tool_outputs(principal.project_id, thread_id, run_id, body))


@router.get("/threads/{thread_id}/runs/{run_id}/steps")
async def list_run_steps(
    thread_id: str, run_id: str, container: ContainerDep, principal: PrincipalDep, page: PageDep, include: IncludeDep
) -> dict[str, Any]:
    return dict_list_body(await container.runs.list_steps(principal.project_id, thread_id, run_id, page, include))


@router.get("/threads/{thread_id}/runs/{run_id}/steps/{step_id}")
async def retrieve_run_step(
    thread_id: str, run_id: str, step_id: str, container: ContainerDep, principal: PrincipalDep, include: IncludeDep
) -> dict[str, Any]:
    return await container.runs.retrieve_step(principal.project_id, thread_id, run_id, step_id, include)
