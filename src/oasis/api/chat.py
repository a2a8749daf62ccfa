"""Chat completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from oasis.api.deps import ContainerDep, PrincipalDep
from oasis.api.disconnect import unless_disconnected
from oasis.api.sse import sse_response
from oasis.protocol.extensions import ChatCompletionRequest

router = APIRouter(tags=["Chat"])


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, container: ContainerDep, principal: PrincipalDep
) -> StreamingResponse | JSONResponse:
    await container.fine_tuned.ensure(principal.project_id, body.model)  # a fine-tune loads when first asked for
    body = await container.chat.with_files_read(body, principal.project_id)
    prepared = await container.chat.prepared(body)
    if body.stream:
        return await sse_response(container.chat.stream(body, prepared, project_id=principal.project_id))
    # A JSONResponse skips FastAPI's generic encoder: the reply is plain JSON data already.
    work = container.chat.create(body, prepared, principal.project_id)
    return JSONResponse(await unless_disconnected(request, work))
