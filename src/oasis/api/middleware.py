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
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from oasis import logs
from oasis.api.errors import error_body
from oasis.protocol import json_depth, json_numbers, lone_surrogates

log = logging.getLogger("oasis.api")
access_log = logging.getLogger("oasis.access")


class _BodyRefused(Exception):
    """The body is refused (too large, or holding what no JSON reader or database takes) before the app reads it."""


# A JSON escape for NUL (an even run of backslashes before it would make it literal text). PostgreSQL cannot
# store NUL in text, so such strings are refused up front with a 400 rather than failing in the database.
# A raw NUL byte is never in UTF-8 JSON (control characters are escaped in strings): it is NUL itself, or a UTF-16
# or UTF-32 body, which json.loads would decode too, past these checks; RFC 8259 asks for UTF-8.
_JSON_NUL = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000|\x00")
_NUL_MESSAGE = "Text in requests must not contain NUL characters (\\u0000), and JSON bodies must be UTF-8."


# Starlette decodes form fields with the charset the content-type names: utf-7 or unicode_escape would turn
# field bytes into lone surrogates, which no database or JSON error body can hold. UTF-8 (and what is a subset of
# it, or latin-1, Starlette's own fallback) cannot produce one.
_SAFE_FORM_CHARSETS = frozenset({b"utf-8", b"utf8", b"us-ascii", b"ascii", b"iso-8859-1", b"latin-1", b"latin1"})
_FORM_CHARSET = re.compile(rb";\s*charset\s*=\s*\"?([^\s;\"]*)")
_CHARSET_MESSAGE = "Multipart form data must be sent as UTF-8 (the content-type names another charset)."


def _form_charset_is_safe(content_type: bytes | None) -> bool:
    if content_type is None or not content_type.startswith(b"multipart/"):
        return True
    named = _FORM_CHARSET.search(content_type)
    return named is None or named.group(1) in _SAFE_FORM_CHARSETS


def route_template(scope: Scope) -> str:
    """`/v1/files/{file_id}` for `/v1/files/file-abc`: the path with its parameters named, so that ids never
    become metric label values; "unmatched" for a path no route took."""
    if "route" not in scope:
        return "unmatched"
    route = scope["route"]
    if isinstance(route, Mount):  # static files: Starlette leaves the file's path out of path_params
        return f"{route.path}/{{path}}"
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
        upload_path_pattern: re.Pattern[str] | None = None,
    ) -> None:
        """`upload_paths` and paths `upload_path_pattern` matches whole take multipart bodies up to the upload
        limit."""
        self.app = app
        self.observe = observe
        self.upload_paths = upload_paths
        self.upload_path_pattern = upload_path_pattern
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
        is_multipart = (content_type or b"").startswith(b"multipart/")  # its boundary may hold the word json
        is_json = content_type is None or (b"json" in content_type and not is_multipart)
        # Only the routes that take files stream multipart bodies to disk; anything else is read whole.
        path = scope["path"]
        upload_path = path in self.upload_paths or (
            self.upload_path_pattern is not None and self.upload_path_pattern.fullmatch(path) is not None
        )
        uploads = upload_path and (content_type or b"").startswith(b"multipart/form-data")
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
        if not _form_charset_is_safe(content_type):
            await reply(400, error_body(_CHARSET_MESSAGE, type="invalid_request_error"))
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"].lower():
            await reply(400, error_body(_NUL_MESSAGE, type="invalid_request_error"))
            return
        # (status, error body) once the body is refused: whatever the app makes of it, this is the answer
        refused: tuple[int, dict[str, object]] | None = None
        tail = b""
        chunks: list[bytes] = []  # a JSON body's, kept for the whole-body checks
        maybe_surrogate = maybe_infinite = False
        brackets = 0

        def refuse(status: int, body: dict[str, object]) -> _BodyRefused:
            nonlocal refused
            refused = (status, body)
            return _BodyRefused()

        async def counting_receive() -> Message:
            nonlocal received, tail, maybe_surrogate, maybe_infinite, brackets
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise refuse(413, too_large_body())
                if is_json:
                    if _JSON_NUL.search(tail + chunk):
                        raise refuse(400, error_body(_NUL_MESSAGE, type="invalid_request_error"))
                    maybe_surrogate = maybe_surrogate or lone_surrogates.may_hold_one(tail, chunk)
                    maybe_infinite = maybe_infinite or json_numbers.may_hold_one(tail, chunk)
                    brackets += json_depth.brackets_in(chunk)
                    maybe_deep = brackets > json_depth.MAX_DEPTH
                    tail = (tail + chunk)[-320:]
                    chunks.append(chunk)
                    if (maybe_surrogate or maybe_infinite or maybe_deep) and not message.get("more_body", False):
                        body = b"".join(chunks)
                        path = lone_surrogates.path_in_body(body) if maybe_surrogate else None
                        if path is not None:
                            message_text = lone_surrogates.lone_surrogate_message(path)
                            raise refuse(
                                400, error_body(message_text, type="invalid_request_error", param=path or None)
                            )
                        if maybe_infinite and json_numbers.holds_one(body):
                            raise refuse(400, error_body(json_numbers.MESSAGE, type="invalid_request_error"))
                        if maybe_deep and json_depth.too_deep(body):
                            raise refuse(400, error_body(json_depth.MESSAGE, type="invalid_request_error"))
            return message

        async def stamped_send(message: Message) -> None:
            nonlocal response_started
            if refused and not response_started:
                return  # whatever the app made of the cut-off body, the answer is the refusal
            if message["type"] == "http.response.start":
                response_started = True
                headers = MutableHeaders(scope=message)
                headers.append("x-request-id", request_id)
                headers.append("openai-processing-ms", str(int((time.perf_counter() - started) * 1000)))
            await send(message)

        try:
            await self.app(scope, counting_receive, stamped_send)
        except Exception:
            if refused:
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
        if refused and not response_started:
            await reply(*refused)
