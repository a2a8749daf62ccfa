"""Leasing job rows: a worker claims one row until a deadline, renews it while it works, and any other
worker may take the row over once the deadline passes (the first worker died). No second queue."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update

from oasis.storage.db import Database


def claimable(table: Any, moment: float) -> list[ColumnElement[bool]]:
    return [or_(table.lease_expires_at.is_(None), table.lease_expires_at < moment)]


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


def held_by(table: Any, seq: int, owner: str) -> list[ColumnElement[bool]]:
    """Conditions for a write that only the lease holder may make (it fails once the lease is taken over)."""
    return [table.seq == seq, table.lease_owner == owner]


def renewal(seconds: float) -> dict[str, float]:
    return {"lease_expires_at": time.time() + seconds}
