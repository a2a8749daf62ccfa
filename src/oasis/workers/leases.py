"""Leasing job rows: a worker claims one row until a deadline, renews it while it works, and any other
worker may take the row over once the deadline passes (the first worker died). No second queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Any

from sqlalchemy import ColumnElement, select, update

from oasis.storage.db import Database
from oasis.storage.leases import claimable, held_by, renewal

log = logging.getLogger("oasis.workers")


async def lease_one(
    db: Database, table: Any, conditions: list[ColumnElement[bool]], *, owner: str, seconds: float
) -> int | None:
    """Claims the oldest row matching `conditions` whose lease is free or lapsed; returns its seq, committed."""
    moment = time.time()
    pending = select(table.seq).where(*conditions, *claimable(table, moment)).order_by(table.seq).limit(1)
    if not db.is_sqlite:
        # Replicas polling at once each skip the rows another has locked instead of queueing behind it.
        pending = pending.with_for_update(skip_locked=True)
    # SQLite runs one writer at a time, so the UPDATE's own conditions make the claim atomic there.
    async with db.session() as session:
        # An idle poll (the common case) reads and leaves: no write transaction, no write lock on SQLite.
        if await session.scalar(select(table.seq).where(*conditions, *claimable(table, moment)).limit(1)) is None:
            return None
        claimed = await session.scalar(
            update(table)
            .where(table.seq == pending.scalar_subquery(), *conditions, *claimable(table, moment))
            .values(lease_owner=owner, lease_expires_at=moment + seconds, attempts=table.attempts + 1)
            .returning(table.seq)
        )
        await session.commit()
    return None if claimed is None else int(claimed)


class LeaseKeeper:
    """Renews a held lease on a timer while its job runs, so a slow step (a long generation, a wait for a full
    engine queue) never lets a second worker take a job that is still running. A renewal that finds the lease
    gone (taken over, or released by the job itself) stops renewing; the job's next held write then fails."""

    def __init__(self, db: Database, table: Any, seq: int, owner: str, seconds: float) -> None:
        self._db = db
        self._table = table
        self._seq = seq
        self._owner = owner
        self._seconds = seconds
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LeaseKeeper:
        self._task = asyncio.create_task(self._renew())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._seconds / 3)
            try:
                async with self._db.session() as session:
                    renewed = await session.execute(
                        update(self._table)
                        .where(*held_by(self._table, self._seq, self._owner))
                        .values(**renewal(self._seconds))
                    )
                    await session.commit()
            except Exception:  # a database hiccup: the next tick tries again, well before the lease lapses
                log.warning("renewing the lease of %s row %s failed", self._table.__tablename__, self._seq)
                continue
            if renewed.rowcount != 1:  # type: ignore[attr-defined]
                return
