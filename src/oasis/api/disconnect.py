"""Stops work for a client that has gone: a non-streamed answer nobody will read must not hold engine slots."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from fastapi import Request

from oasis.errors import OasisError

Result = TypeVar("Result")


async def unless_disconnected(request: Request, work: Coroutine[Any, Any, Result]) -> Result:
    task = asyncio.ensure_future(work)

    async def client_left() -> None:
        # The body is read by now, so the next message is the client's disconnect (or never comes).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_left())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()  # the service's finally blocks cancel the engine sequences
        raise OasisError(499, "The client closed the request.", code="client_closed_request")
    return task.result()
