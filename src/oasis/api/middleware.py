"""Pure ASGI middleware (it must not buffer streamed responses): request ids, timing, body limit, 500s, and
one access line per request."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oasis import logs
from oasis.api.errors import error_body
from oasis.protocol import lone_surrogates

log = logging.getLogger("oasis.api")
access_log = logging.getLogger("oasis.access")


class _BodyTooLarge(Exception):
    pass


class _NulInBody(Exception):
    pass


class _LoneSurrogateInBody(Exception):
    pass


# A JSON escape for NUL (an even run of backslashes before it would make it literal text). PostgreSQL cannot
# store NUL in text, so such strings are refused up front with a 400 rather than failing in the database.
_JSON_NUL = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000")
_NUL_MESSAGE = "Text in requests must not contain NUL characters (\\u0000)."


def route_template(scope: Scope) -> str:
    """`/v1/files/{file_id}` for `/v1/files/file-abc`: the path with its parameters named, so that ids never
    become metric label values; "unmatched" for a path no route took."""
    if "route" not in scope:
        return "unmatched"
    segments = str(scope["path"]).split("/")
    for name, value in scope.get("path_params", {}).items():
        parts = str(value).split("/")
        for start in range(len(segments) - len(parts), 0, -1):
            if segments[start : start + len(parts)] == parts:
                segments[start : start + len(parts)] = [f"{{{name}}}"]
                break
    return "/".join(segments)


class RequestContextMiddleware:
    """Gives every response `x-request-id` and `openai-processing-ms`, refuses bodies over the limit with
    413, and turns an unhandled exception into a 500 envelope that names the request id (no stack trace).

    Multipart bodies (file uploads, streamed to disk) may be as large as the upload limit; every other body is
    parsed whole in memory, so it has the smaller JSON limit."""

    def __init__(
        self,
        app: ASGIApp,
        max_upload_body_bytes: int,
        max_json_body_bytes: int,
        upload_paths: frozenset[str],
        observe: Callable[[str, str, int, float], None] = lambda method, route, status, seconds: None,
    ) -> None:
        self.app = app
        self.observe = observe
        self.upload_paths = upload_paths
        self.max_upload_body_bytes = max_upload_body_bytes
        self.max_json_body_bytes = max_json_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        token = logs.request_id.set(request_id)
        status = 0

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                limits = scope["state"].get("rate_limit_headers")
                if limits:  # what the caller has left of its rate limits (api/deps.py)
                    message = {
                        **message,
                        "headers": [
                            *message.get("headers", []),
                            *((name.encode(), value.encode()) for name, value in limits.items()),
                        ],
                    }
            await send(message)

        try:
            await self._handle(scope, receive, observed_send, request_id, started)
        finally:
            seconds = time.perf_counter() - started
            route = route_template(scope)
            method = scope["method"]
            self.observe(method, route, status, seconds)
            access_log.info(
                "%s %s %s %.1f ms",
                method,
                scope["path"],
                status or "-",
                seconds * 1000,
                extra={"method": method, "path": scope["path"], "status": status, "duration_ms": seconds * 1000},
            )
            logs.request_id.reset(token)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, request_id: str, started: float) -> None:
        response_started = False
        body_too_large = False
        received = 0

        async def reply(status: int, body: dict[str, object]) -> None:
            payload = json.dumps(body).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(payload)).encode()),
                        (b"x-request-id", request_id.encode()),
                        (b"openai-processing-ms", str(int((time.perf_counter() - started) * 1000)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": payload})

        declared_length = None
        content_type = None
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                declared_length = int(value)
            if name == b"content-type" and content_type is None:  # the first, as Starlette reads it
                content_type = value.lower()
        is_json = content_type is None or b"json" in content_type
        # Only the routes that take files stream multipart bodies to disk; anything else is read whole.
        uploads = scope["path"] in self.upload_paths and (content_type or b"").startswith(b"multipart/form-data")
        limit = self.max_upload_body_bytes if uploads else self.max_json_body_bytes

        def too_large_body() -> dict[str, object]:
            kind = "an upload" if uploads else "a JSON body"
            return error_body(
                f"The request body is larger than this server accepts for {kind} ({limit} bytes).",
                type="invalid_request_error",
                code="request_too_large",
            )

        if declared_length is not None and declared_length > limit:
            await reply(413, too_large_body())
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"].lower():
            await reply(400, error_body(_NUL_MESSAGE, type="invalid_request_error"))
            return
        nul_in_body = False
        tail = b""
        chunks: list[bytes] = []  # a JSON body's, kept for the whole-body surrogate check
        maybe_surrogate = False
        lone_surrogate: tuple[str | None] | None = None  # (the field that holds one) once found

        async def counting_receive() -> Message:
            nonlocal received, body_too_large, nul_in_body, tail, maybe_surrogate, lone_surrogate
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    body_too_large = True
                    raise _BodyTooLarge
                if is_json:
                    if _JSON_NUL.search(tail + chunk):
                        nul_in_body = True
                        raise _NulInBody
                    maybe_surrogate = maybe_surrogate or lone_surrogates.may_hold_one(tail, chunk)
                    tail = (tail + chunk)[-64:]
                    chunks.append(chunk)
                    if maybe_surrogate and not message.get("more_body", False):
                        body = b"".join(chunks)
                        if lone_surrogates.holds_one(body):
                            lone_surrogate = (lone_surrogates.param_of(body) or None,)
                            raise _LoneSurrogateInBody
            return message

        async def stamped_send(message: Message) -> None:
            nonlocal response_started
            if (body_too_large or nul_in_body or lone_surrogate) and not response_started:
                return  # whatever the app made of the cut-off body, the answer is 413 (or 400)
            if message["type"] == "http.response.start":
                response_started = True
                headers = MutableHeaders(scope=message)
                headers.append("x-request-id", request_id)
                headers.append("openai-processing-ms", str(int((time.perf_counter() - started) * 1000)))
            await send(message)

        try:
            await self.app(scope, counting_receive, stamped_send)
        except Exception:
            if body_too_large or nul_in_body or lone_surrogate:
                pass
            elif response_started:
                log.exception("request %s failed after its response started", request_id)
                return
            else:
                log.exception("request %s failed", request_id)
                await reply(
                    500,
                    error_body(
                        "The server had an error while processing your request. "
                        f"Quote the request id {request_id} when you report it.",
                        type="server_error",
                    ),
                )
                return
        if body_too_large and not response_started:
            await reply(413, too_large_body())
        elif nul_in_body and not response_started:
            await reply(400, error_body(_NUL_MESSAGE, type="invalid_request_error"))
        elif lone_surrogate and not response_started:
            (param,) = lone_surrogate
            where = f"'$.{param}'" if param else "Text in the request"
            message = f"{where} is not valid Unicode: it holds a lone surrogate (a \\uD800-\\uDFFF escape)."
            await reply(400, error_body(message, type="invalid_request_error", param=param))
