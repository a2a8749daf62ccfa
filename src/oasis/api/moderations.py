"""Moderations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from oasis.api.deps import ContainerDep, PrincipalDep
from oasis.api.disconnect import unless_disconnected
from oasis.protocol.extensions import CreateModerationRequest

router = APIRouter(tags=["Moderations"])


@router.post("/moderations")
async def create_moderation(
    body: CreateModerationRequest, request: Request, container: ContainerDep, _principal: PrincipalDep
) -> dict[str, Any]:
    payload = body.model_dump(mode="json", exclude_none=True)
    return await unless_disconnected(request, container.moderations.create(payload))
