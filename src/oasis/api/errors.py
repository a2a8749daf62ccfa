"""The one place that builds OpenAI's `{"error": {"message", "type", "param", "code"}}` envelopes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from oasis.errors import OasisError, invalid_fields


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: OasisError) -> JSONResponse:
    return JSONResponse(
        error_body(error.message, type=error.type, param=error.param, code=error.code),
        status_code=error.status,
        headers=error.headers,
    )


def validation_error(exc: RequestValidationError) -> OasisError:
    return invalid_fields(exc.errors())


def install_error_handlers(app: FastAPI) -> None:
    async def on_oasis_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OasisError)
        return error_response(exc)

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            error = OasisError(404, f"Unknown request URL: {request.method} {request.url.path}.", code="unknown_url")
        elif exc.status_code == 405:
            error = OasisError(
                405,
                f"Method {request.method} is not allowed on {request.url.path}.",
                code="method_not_allowed",
            )
        else:
            kind = "server_error" if exc.status_code >= 500 else "invalid_request_error"
            error = OasisError(exc.status_code, str(exc.detail), type=kind)
        return error_response(error)

    app.add_exception_handler(OasisError, on_oasis_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
