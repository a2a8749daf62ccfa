"""`GET /health`: every model's state; 200 once each configured engine kind has a ready model, else 503."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from oasis.api.deps import ContainerDep
from oasis.services.models.health import readiness

router = APIRouter()


@router.get("/health", include_in_schema=False)
async def health(container: ContainerDep) -> JSONResponse:
    state = readiness(container.registry.states)
    body: dict[str, object] = {"status": state.status}
    if state.error is not None:
        body["error"] = state.error
    body |= {"models": state.models, "max_upload_bytes": container.settings.files.max_upload_bytes}
    return JSONResponse(body, status_code=200 if state.serving else 503)
