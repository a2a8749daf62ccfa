"""The Responses API (after the 2.0.0 spec): create (whole, streamed or in the background), retrieve (a
background one streamed again), cancel, delete, input items, a request's input tokens counted, and a conversation
compacted."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from oasis.api.deps import ContainerDep, Order, PrincipalDep
from oasis.api.disconnect import unless_disconnected
from oasis.api.lists import dict_list_body
from oasis.api.sse import typed_events_response
from oasis.protocol.responses import CountInputTokensRequest, CreateResponseRequest
from oasis.storage.pagination import PageRequest

router = APIRouter(tags=["Responses"])


@router.post("/responses", response_model=None)
async def create_response(
    body: CreateResponseRequest, request: Request, container: ContainerDep, principal: PrincipalDep
) -> StreamingResponse | JSONResponse:
    plan = await container.responses.plan(principal.project_id, body)
    if body.background:
        queued = await container.responses.enqueue(plan)
        if body.stream:
            events = await container.responses.stream_again(principal.project_id, plan.id, None)
            return await typed_events_response(events)
        return JSONResponse(queued)
    if body.stream:
        # the first event waits for a compaction's summary and the first token: a client leaving meanwhile stops it
        return await typed_events_response(await unless_disconnected(request, container.responses.stream(plan)))
    return JSONResponse(await unless_disconnected(request, container.responses.create(plan)))


@router.post("/responses/input_tokens")
async def count_input_tokens(
    body: CountInputTokensRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    # no model named: the prompt's, if the request names a configured prompt with one, else the first served
    asked = body.model_copy(update={"model": body.model or ""})
    return await container.responses.count_input_tokens(
        principal.project_id, asked, default_model=container.tokenizer.first_model
    )


@router.post("/responses/compact", response_model=None)
async def compact_response(
    body: CreateResponseRequest, request: Request, container: ContainerDep, principal: PrincipalDep
) -> JSONResponse:
    return JSONResponse(await unless_disconnected(request, container.responses.compact(principal.project_id, body)))


@router.get("/responses/{response_id}", response_model=None)
async def retrieve_response(
    response_id: str,
    container: ContainerDep,
    principal: PrincipalDep,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=-1)] = None,
) -> dict[str, Any] | StreamingResponse:
    if stream:
        events = await container.responses.stream_again(principal.project_id, response_id, starting_after)
        return await typed_events_response(events)
    return await container.responses.retrieve(principal.project_id, response_id)


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.responses.cancel(principal.project_id, response_id)


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.responses.delete(principal.project_id, response_id)


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    container: ContainerDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Order = "desc",
    after: str | None = None,
    before: str | None = None,
) -> dict[str, Any]:
    page = PageRequest(limit=limit, order=order, after=after, before=before)
    return dict_list_body(await container.responses.input_items(principal.project_id, response_id, page))
