"""The one place that builds OpenAI's `{"error": {"message", "type", "param", "code"}}` envelopes."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from oasis.errors import OasisError


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(error: OasisError) -> JSONResponse:
    return JSONResponse(
        error_body(error.message, type=error.type, param=error.param, code=error.code),
        status_code=error.status,
        headers=error.headers,
    )


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "json-or-python", "is-instance"}


def _is_type_tag(part: str) -> bool:
    """Pydantic puts union members' type names in error locations; OpenAI's field names are snake_case."""
    return (
        part in _TYPE_TAGS
        or part[:1].isupper()
        or any(mark in part for mark in "[(")
        or part.startswith(("function-", "tagged-union", "constrained-", "literal", "lax-", "json-"))
    )


def _param_from_location(location: tuple[Any, ...]) -> str | None:
    """("body", "messages", 0, "role") -> "messages[0].role", the way OpenAI names a field."""
    parts = [part for part in location if part not in ("body", "query", "path", "header", "form")]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        elif isinstance(part, str) and not _is_type_tag(part):
            name += f".{part}" if name else part
    return name or None


def validation_error(exc: RequestValidationError) -> OasisError:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return OasisError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload.)",
        )
    param = _param_from_location(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value"))
    raw_context = first.get("ctx")
    context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
    if first.get("type") == "union_tag_invalid" and "discriminator" in context:
        # A tagged union (messages by role): name the tag field, as OpenAI does.
        tag_field = str(context["discriminator"]).strip("'")
        param = f"{param}.{tag_field}" if param else tag_field
        message = f"'{context.get('tag')}' is not one of {context.get('expected_tags')}"
    if first.get("type") == "missing":
        text = f"Missing required parameter: '{param}'." if param else "Missing request body."
    else:
        text = f"Invalid value for '{param}': {message}." if param else f"Invalid request: {message}."
    return OasisError(400, text, param=param)


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
