"""Where a run's execution reports what happens, as the Assistants stream events (`thread.run.created` ...)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

Event = tuple[str, dict[str, Any]]

# The events after which a run's stream has nothing more to say (the run ended, or waits for tool outputs).
LAST_EVENTS = frozenset(
    {
        "thread.run.completed",
        "thread.run.incomplete",
        "thread.run.failed",
        "thread.run.cancelled",
        "thread.run.expired",
        "thread.run.requires_action",
        "error",
    }
)


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
        self._said_last = False

    def emit(self, name: str, data: dict[str, Any]) -> None:
        self._said_last = self._said_last or name in LAST_EVENTS
        self._queue.put_nowait((name, data))

    def close(self) -> None:
        """Ends the stream. An execution that stopped before its run's last event (its process shutting down, the
        database gone while it failed the run) tells its reader so: a stream never ends as if the run had."""
        if not self._said_last:
            message = "The stream ended before the run did; retrieve the run to see where it is."
            self.emit("error", {"error": {"message": message, "type": "server_error", "param": None, "code": None}})
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while (event := await self._queue.get()) is not None:
            yield event
