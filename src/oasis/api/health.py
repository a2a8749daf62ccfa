"""`GET /health`: 200 once the configured models are loaded, 503 before (or if loading failed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from oasis.api.deps import ContainerDep

router = APIRouter()


@router.get("/health", include_in_schema=False)
async def health(container: ContainerDep) -> JSONResponse:
    body: dict[str, object] = {"max_upload_bytes": container.settings.files.max_upload_bytes}
    if container.engines_ready.is_set():
        return JSONResponse({"status": "ok", **body})
    if container.engine_error is not None:
        return JSONResponse({"status": "error", "error": container.engine_error, **body}, status_code=503)
    return JSONResponse({"status": "loading", **body}, status_code=503)
