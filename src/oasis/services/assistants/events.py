"""Where a run's execution reports what happens, as the Assistants stream events (`thread.run.created` ...)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

Event = tuple[str, dict[str, Any]]


class RunEvents(Protocol):
    # Whether run steps show file_search results' contents (`include[]` on the request that streams them).
    include_contents: bool

    def emit(self, name: str, data: dict[str, Any]) -> None: ...


class NoEvents:
    """A run nobody streams: its state is read from the database."""

    include_contents = False

    def emit(self, name: str, data: dict[str, Any]) -> None:
        return None


class EventQueue:
    """The events of a streamed run, in order, until the execution closes the queue. The execution never waits
    on the reader: a client that leaves does not stop its run, as with OpenAI."""

    def __init__(self, include_contents: bool = False) -> None:
        self.include_contents = include_contents
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def emit(self, name: str, data: dict[str, Any]) -> None:
        self._queue.put_nowait((name, data))

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while (event := await self._queue.get()) is not None:
            yield event
