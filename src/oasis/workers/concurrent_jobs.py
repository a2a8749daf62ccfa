"""The executions a job runner has under way at once (runs, background responses): interactive jobs each get a
task of their own, so one long job never holds up the next."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class ConcurrentJobs:
    """Up to `limit` executions at once; `on_finished` is called as each ends (a freed place takes the next job
    at once)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running: set[asyncio.Task[None]] = set()
        self.on_finished: Callable[[], None] = lambda: None

    @property
    def full(self) -> bool:
        return len(self._running) >= self._limit

    def start(self, execution: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(execution)
        self._running.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self.on_finished()

    async def close(self, grace_seconds: float) -> None:
        """Lets executions in flight finish for a moment, then cancels them (their jobs are handed back, and
        another worker resumes them)."""
        if self._running:
            await asyncio.wait(list(self._running), timeout=grace_seconds)
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
