"""`GET /metrics` (Prometheus text format), outside /v1: no project key, an optional metrics token instead."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from oasis.api.deps import ContainerDep
from oasis.errors import OasisError

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, container: ContainerDep) -> Response:
    token = container.settings.server.metrics_token
    if token is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Bytes, not str: compare_digest refuses non-ASCII text, and headers may carry any latin-1.
        expected = token.get_secret_value().encode()
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode("latin-1"), expected):
            raise OasisError(401, "GET /metrics needs the metrics token as a bearer.", code="invalid_api_key")
    return Response(await container.monitoring.scrape(), media_type=CONTENT_TYPE_LATEST)
