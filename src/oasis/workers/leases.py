"""Leasing job rows: a worker claims one row until a deadline, renews it while it works, and any other
worker may take the row over once the deadline passes (the first worker died). No second queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from sqlalchemy import ColumnElement, Dialect, Float, Select, bindparam, select, update

from oasis.storage.db import Database
from oasis.storage.leases import claimable, database_now, handed_back, held_by, renewal

log = logging.getLogger("oasis.workers")


class JobClaims:
    """Claims rows of one job table: the oldest row matching `conditions` whose lease is free or lapsed (in the
    database's clock).

    The statements are built once: building a SQLAlchemy statement costs more than running it, and each kind of
    job is polled every second (four idle polls a second took ~10 ms of the event loop's CPU, time that streamed
    tokens waited for). On SQLite the idle check, an indexed read, goes through the database's reader
    connection: no hop to aiosqlite's thread, and a WAL reader never waits for the writer."""

    def __init__(self, db: Database, table: Any, conditions: Sequence[ColumnElement[bool]]) -> None:
        self._db = db
        self._table = table
        self._cut_off: set[int] = set()  # rows whose job a cancel stopped mid-way (see `cut_off`)
        where = [*conditions, *claimable(table)]
        self._probe = select(table.seq).where(*where).limit(1)
        pending = select(table.seq).where(*where).order_by(table.seq).limit(1)
        if not db.is_sqlite:
            # Replicas polling at once each skip the rows another has locked instead of queueing behind it.
            pending = pending.with_for_update(skip_locked=True)
        # SQLite runs one writer at a time, so the UPDATE's own conditions make the claim atomic there.
        self._claim = (
            update(table)
            .where(table.seq == pending.scalar_subquery(), *where)
            .values(
                lease_owner=bindparam("owner"),
                lease_expires_at=database_now() + bindparam("seconds", type_=Float),
                attempts=table.attempts + 1,
            )
            .returning(table.seq)
        )
        self._sqlite_probe = _positional(self._probe, db.engine.dialect) if db.is_sqlite else None

    async def _any_claimable(self) -> bool:
        if self._sqlite_probe is not None:
            sql, names, values = self._sqlite_probe
            row = self._db.sqlite_point_read(sql, tuple(values[name] for name in names))
            return row is not None
        async with self._db.engine.connect() as connection:
            return await connection.scalar(self._probe) is not None

    async def lease_one(self, *, owner: str, seconds: float) -> int | None:
        """Claims one row for `owner` until `seconds` from now; returns its seq, committed, or None."""
        # An idle poll (the common case) reads and leaves: no write transaction, no write lock on SQLite.
        if not await self._any_claimable():
            return None
        async with self._db.engine.begin() as connection:
            claimed = await connection.scalar(self._claim, {"owner": owner, "seconds": seconds})
        return None if claimed is None else int(claimed)

    def cut_off(self, seq: int) -> None:
        """Notes that the job of row `seq` was cancelled mid-way (its lease left held, as after a crash, unless
        `hand_back` frees it)."""
        self._cut_off.add(seq)

    async def hand_back(self, owner: str) -> int:
        """Frees the rows cut off while `owner` held them, uncounting those leases; returns how many. Only once
        the loop that ran them has stopped for a shutdown. A lease left held by a job that failed is not touched:
        that attempt counts."""
        cut_off, self._cut_off = sorted(self._cut_off), set()
        if not cut_off:
            return 0
        async with self._db.session() as session:
            freed = await session.execute(
                update(self._table)
                .where(self._table.seq.in_(cut_off), self._table.lease_owner == owner)
                .values(**handed_back(self._table))
            )
            await session.commit()
        return int(freed.rowcount)  # type: ignore[attr-defined]


def _positional(statement: Select[Any], dialect: Dialect) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """The statement as SQLite text with `?` parameters, the names of those parameters in order, and the values
    fixed when it was built."""
    # The IN lists' parameters are rendered one by one.
    expanded = statement.compile(dialect=dialect).construct_expanded_state({})
    return expanded.statement, tuple(expanded.positiontup or ()), dict(expanded.parameters)


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
