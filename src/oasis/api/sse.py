"""Server-sent events: `data: {json}` frames, then `data: [DONE]`; an error mid-stream becomes an error frame."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

from oasis.api.errors import error_body
from oasis.errors import OasisError

log = logging.getLogger("oasis.api")


def _frame(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def sse_response(events: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    """Waits for the first event before answering, so that a failure to start (an upstream's 404, a full
    queue) still gets its HTTP status rather than a 200 with an error frame."""
    try:
        first = await anext(events)
    except StopAsyncIteration:
        first = None

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
        yield b"data: [DONE]\n\n"

    return StreamingResponse(
        body(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"}
    )
