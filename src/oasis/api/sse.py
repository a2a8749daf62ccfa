"""Server-sent events: `data: {json}` frames, then `data: [DONE]`; an error mid-stream becomes an error frame."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from oasis.api.errors import error_body
from oasis.errors import OasisError

log = logging.getLogger("oasis.api")


# One encoder for every frame: json.dumps with arguments builds a new one at each call, once per streamed token.
_encode = json.JSONEncoder(separators=(",", ":")).encode
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


def _frame(payload: Any) -> bytes:
    return b"data: " + _encode(payload).encode() + b"\n\n"


async def sse_response(events: AsyncIterator[dict[str, Any]], wait_for_first: bool = True) -> StreamingResponse:
    """Waits for the first event before answering, so that a failure to start (an upstream's 404) still gets its
    HTTP status rather than a 200 with an error frame. Without `wait_for_first` (events a local engine has
    queued already: what could refuse them was checked) the answer starts at once, and its headers go out while
    the engine reads the prompt instead of after the first token."""
    first = None
    pending: asyncio.Task[dict[str, Any] | None] | None = None
    if wait_for_first:
        first = await _first_of(events)
    else:
        # Started now (its first step runs here, to its wait for the first token): a client gone before the body
        # is read never starts the body, and then cancelling this (below) runs the events' cleanup, which frees
        # what they queued; an events generator that never started would run none.
        pending = asyncio.ensure_future(_first_of(events))
        await asyncio.sleep(0)

    async def body() -> AsyncIterator[bytes]:
        nonlocal first
        try:
            if pending is not None:
                first = await pending
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

    async def stop_waiting() -> None:
        if pending is not None and not pending.done():
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)

    return _EventStream(body(), stop_waiting)


class _EventStream(StreamingResponse):
    """An SSE response that runs `at_end` however it ended: streamed through, or its client gone before the body
    was read (Starlette then never starts the body, nor any `finally` in it)."""

    def __init__(self, content: AsyncIterator[bytes], at_end: Callable[[], Awaitable[None]]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=_SSE_HEADERS)
        self._at_end = at_end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._at_end()


async def _first_of(events: AsyncIterator[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return await anext(events)
    except StopAsyncIteration:
        return None


def _named_frame(name: str, payload: Any) -> bytes:
    return f"event: {name}\ndata: ".encode() + _encode(payload).encode() + b"\n\n"


async def typed_events_response(events: Iterable[dict[str, Any]] | AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """Events each named by its type (a streamed image generation's, transcription's or speech's): `event: <type>`
    / `data: {json}` frames. The first event is awaited before answering, so a failure before it keeps its HTTP
    status; a failure after it goes out as an `error` event, which the SDK raises."""
    stream = events if isinstance(events, AsyncIterator) else _async(events)
    first = await _first_of(stream)

    async def body() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield _named_frame(first["type"], first)
            async for event in stream:
                yield _named_frame(event["type"], event)
        except OasisError as exc:
            yield _named_frame("error", error_body(exc.message, type=exc.type, param=exc.param, code=exc.code))
        except Exception:
            log.exception("stream failed")
            yield _named_frame("error", error_body("The server had an error while streaming.", type="server_error"))
        finally:
            await close()

    async def close() -> None:  # run again when the client left before the body started: a no-op after the first
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()

    return _EventStream(body(), close)


async def _async(events: Iterable[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for event in events:
        yield event


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

    return StreamingResponse(body(), media_type="text/event-stream", headers=_SSE_HEADERS)
