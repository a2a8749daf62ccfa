"""Chat completions, and those stored with `store: true` (after the 2.0.0 spec)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from oasis.api.deps import ContainerDep, Order, PrincipalDep
from oasis.api.disconnect import unless_disconnected
from oasis.api.lists import dict_list_body
from oasis.api.sse import sse_response
from oasis.protocol.extensions import ChatCompletionRequest, ChatCompletionUpdate
from oasis.storage.pagination import PageRequest

router = APIRouter(tags=["Chat"])


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, container: ContainerDep, principal: PrincipalDep
) -> StreamingResponse | JSONResponse:
    container.stored_chats.check(body)
    await container.fine_tuned.ensure(principal.project_id, body.model)  # a fine-tune loads when first asked for
    asked = body
    body = await container.chat.with_files_read(body, principal.project_id)
    prepared = await container.chat.prepared(body)
    request_id = getattr(request.state, "request_id", None)
    if body.stream:
        usage_asked = bool(body.stream_options and body.stream_options.include_usage)
        if not body.store:
            return await sse_response(container.chat.stream(body, prepared, project_id=principal.project_id))
        # a stored answer has its usage, whether or not the client asked to hear it
        chunks = container.chat.stream(body.with_usage_reported(), prepared, project_id=principal.project_id)
        kept = container.stored_chats.kept_streamed(principal.project_id, asked, chunks, request_id, usage_asked)
        return await sse_response(kept)

    async def answer() -> dict[str, Any]:
        completion = await container.chat.create(body, prepared, principal.project_id)
        return await container.stored_chats.kept(principal.project_id, asked, completion, request_id)

    # A JSONResponse skips FastAPI's generic encoder: the reply is plain JSON data already.
    return JSONResponse(await unless_disconnected(request, answer()))


# `metadata[key]=value`, as the SDKs send a metadata filter in a query string
_METADATA_PARAM = re.compile(r"^metadata\[(.+)\]$")


@router.get("/chat/completions")
async def list_chat_completions(
    request: Request,
    container: ContainerDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Order = "asc",
    after: str | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    metadata = {
        found.group(1): value
        for name, value in request.query_params.multi_items()
        if (found := _METADATA_PARAM.match(name)) is not None
    }
    page = PageRequest(limit=limit, order=order, after=after)
    return dict_list_body(await container.stored_chats.list_completions(principal.project_id, page, model, metadata))


@router.get("/chat/completions/{completion_id}")
async def retrieve_chat_completion(
    completion_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.stored_chats.retrieve(principal.project_id, completion_id)


@router.post("/chat/completions/{completion_id}")
async def update_chat_completion(
    completion_id: str, body: ChatCompletionUpdate, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.stored_chats.update(principal.project_id, completion_id, body.metadata)


@router.delete("/chat/completions/{completion_id}")
async def delete_chat_completion(
    completion_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.stored_chats.delete(principal.project_id, completion_id)


@router.get("/chat/completions/{completion_id}/messages")
async def list_chat_completion_messages(
    completion_id: str,
    container: ContainerDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Order = "asc",
    after: str | None = None,
) -> dict[str, Any]:
    page = PageRequest(limit=limit, order=order, after=after)
    return dict_list_body(await container.stored_chats.messages(principal.project_id, completion_id, page))
