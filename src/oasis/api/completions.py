"""Legacy completions."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from oasis.api.deps import ContainerDep, PrincipalDep
from oasis.api.disconnect import unless_disconnected
from oasis.api.sse import sse_response
from oasis.protocol.extensions import CompletionRequest

router = APIRouter(tags=["Completions"])


@router.post("/completions", response_model=None)
async def create_completion(
    body: CompletionRequest, request: Request, container: ContainerDep, principal: PrincipalDep
) -> StreamingResponse | JSONResponse:
    await container.fine_tuned.ensure(principal.project_id, body.model)  # a fine-tune loads when first asked for
    prepared = await container.completions.prepared(body)
    if body.stream:
        # Prepared: a local engine has queued it, and its first event is its first token (no role chunk, unlike
        # chat's): answering now sends the headers during the prompt's decode, not after it. Not when the prompt is
        # scored too (echo with logprobs): that sequence is queued with the first event, and a full queue is a 429.
        queued = prepared is not None and not (prepared.echo and prepared.logprobs is not None)
        return await sse_response(container.completions.stream(body, prepared), wait_for_first=not queued)
    return JSONResponse(await unless_disconnected(request, container.completions.create(body, prepared)))
