"""The worker loop: asks each job runner for work until none is left, then sleeps until woken or the next poll.

`oasis serve` runs one in-process; `oasis worker` runs the same loop on its own, on any host that reaches the
database (new jobs made by another process are found at the next poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol, runtime_checkable

from oasis.storage.leases import process_name
from oasis.wakeups import until_next_tick
from oasis.workers.leases import JobClaims

log = logging.getLogger("oasis.workers")


class JobRunner(Protocol):
    async def run_next(self, owner: str) -> bool:
        """Leases and runs one job; False when none is waiting."""
        ...


@runtime_checkable
class LeaseHolder(Protocol):
    """A runner whose jobs a shutdown may cut off mid-way: its claims hand them back (JobClaims.hand_back)."""

    claims: JobClaims


class WorkerLoop:
    def __init__(self, runners: list[JobRunner], poll_seconds: float) -> None:
        self.owner = process_name("worker")
        self._runners = runners
        self._poll_seconds = poll_seconds
        self._woken = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        self._woken.set()

    def stop(self) -> None:
        """Ends `run` after the job in hand: cancelling it mid-query would strand a database connection."""
        self._stopping = True
        self._woken.set()

    async def hand_back(self) -> None:
        """After `run` has ended, cut off by a shutdown: the jobs it held are free for the next worker at once,
        rather than when their leases lapse, and the cut-off leases do not count as attempts."""
        for runner in self._runners:
            if isinstance(runner, LeaseHolder):
                try:
                    freed = await runner.claims.hand_back(self.owner)
                except Exception:  # the database is going away too: the leases lapse as after a crash
                    log.warning("worker %s: handing back its leases failed", self.owner, exc_info=True)
                    continue
                if freed:
                    log.info("worker %s: handed back %d unfinished job(s)", self.owner, freed)

    async def run(self) -> None:
        while not self._stopping:
            self._woken.clear()
            busy = False
            for runner in self._runners:
                try:
                    busy = await runner.run_next(self.owner) or busy
                except Exception:  # a database hiccup must not end the loop: the next poll tries again
                    log.exception("worker %s: leasing a job failed", self.owner)
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), timeout=until_next_tick(self._poll_seconds))
