"""Legacy completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from oasis.api.deps import ContainerDep, PrincipalDep
from oasis.api.disconnect import unless_disconnected
from oasis.api.sse import sse_response
from oasis.protocol.extensions import CompletionRequest

router = APIRouter(tags=["Completions"])


@router.post("/completions", response_model=None)
async def create_completion(
    body: CompletionRequest, request: Request, container: ContainerDep, _principal: PrincipalDep
) -> StreamingResponse | dict[str, Any]:
    if body.stream:
        return await sse_response(container.completions.stream(body))
    return await unless_disconnected(request, container.completions.create(body))
