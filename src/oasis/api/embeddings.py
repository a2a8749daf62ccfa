"""Embeddings."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from oasis.api.deps import ContainerDep, PrincipalDep
from oasis.api.disconnect import unless_disconnected
from oasis.protocol import openapi_types as spec

router = APIRouter(tags=["Embeddings"])


@router.post("/embeddings", response_model=None)
async def create_embedding(
    body: spec.CreateEmbeddingRequest, request: Request, container: ContainerDep, _principal: PrincipalDep
) -> JSONResponse:
    return JSONResponse(await unless_disconnected(request, container.embeddings.create(body)))
