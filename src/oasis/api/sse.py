"""Server-sent events: `data: {json}` frames, then `data: [DONE]`; an error mid-stream becomes an error frame."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from oasis.api.errors import error_body
from oasis.errors import OasisError

log = logging.getLogger("oasis.api")


# One encoder for every frame: json.dumps with arguments builds a new one at each call, once per streamed token.
_encode = json.JSONEncoder(separators=(",", ":")).encode


def _frame(payload: Any) -> bytes:
    return b"data: " + _encode(payload).encode() + b"\n\n"


async def sse_response(events: AsyncIterator[dict[str, Any]], wait_for_first: bool = True) -> StreamingResponse:
    """Waits for the first event before answering, so that a failure to start (an upstream's 404) still gets its
    HTTP status rather than a 200 with an error frame. Without `wait_for_first` (events a local engine has
    queued already: what could refuse them was checked) the answer starts at once, and its headers go out while
    the engine reads the prompt instead of after the first token."""
    first = None
    if wait_for_first:
        with contextlib.suppress(StopAsyncIteration):
            first = await anext(events)

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield _frame(first)
            async for event in events:
                yield _frame(event)
        except OasisError as exc:
            yield _frame(error_body(exc.message, type=exc.type, param=exc.param, code=exc.code))
        except Exception:
            log.exception("stream failed")
            yield _frame(error_body("The server had an error while streaming the response.", type="server_error"))
        finally:
            # A client that left ends the events now (their sequences freed), not when they are collected.
            close = getattr(events, "aclose", None)
            if close is not None:
                await close()
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )


def _named_frame(name: str, payload: Any) -> bytes:
    return f"event: {name}\ndata: ".encode() + _encode(payload).encode() + b"\n\n"


async def assistant_events_response(events: AsyncIterator[tuple[str, dict[str, Any]]]) -> StreamingResponse:
    """The Assistants stream: `event: <name>` / `data: {json}` frames, then `event: done` / `data: [DONE]`; a
    failure mid-stream goes out as `event: error`. No `id:` lines: the SDK helpers do not expect them."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for name, data in events:
                yield _named_frame(name, data)
        except OasisError as exc:
            yield _named_frame("error", error_body(exc.message, type=exc.type, param=exc.param, code=exc.code))
        except Exception:
            log.exception("assistant stream failed")
            yield _named_frame(
                "error", error_body("The server had an error while streaming the run.", type="server_error")
            )
        yield b"event: done\ndata: [DONE]\n\n"

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )
