"""Rows of batches and their per-line results."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.leases import held_by
from oasis.storage.pagination import Page, PageRequest, paginate
from oasis.storage.tables import BatchJob, BatchResult

# Statuses of a batch that a worker still has to act on.
RUNNING = ("validating", "in_progress", "finalizing", "cancelling")


async def get_batch(session: AsyncSession, project_id: str, batch_id: str) -> BatchJob | None:
    return await session.scalar(
        select(BatchJob).where(
            BatchJob.id == batch_id, BatchJob.project_id == project_id, BatchJob.deleted_at.is_(None)
        )
    )


async def list_batches(session: AsyncSession, project_id: str, page: PageRequest) -> Page[BatchJob]:
    return await paginate(session, BatchJob, scope=[BatchJob.project_id == project_id], page=page)


async def input_in_use(session: AsyncSession, file_id: str) -> bool:
    """Whether a batch that has not finished still reads this file as its input."""
    found = await session.scalar(
        select(BatchJob.seq).where(BatchJob.input_file_id == file_id, BatchJob.status.in_(RUNNING)).limit(1)
    )
    return found is not None


async def update_held(
    session: AsyncSession, seq: int, owner: str, statuses: tuple[str, ...], values: dict[str, Any]
) -> bool:
    """Writes `values` only while `owner` holds the lease and the batch is in one of `statuses`."""
    moved = await session.execute(
        update(BatchJob).where(*held_by(BatchJob, seq, owner), BatchJob.status.in_(statuses)).values(**values)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined]


async def request_cancel(session: AsyncSession, seq: int, stamp: int) -> bool:
    """Moves the batch to `cancelling` only while it is still validating or in progress: a worker that finished
    it meanwhile must not see its final status turned back."""
    moved = await session.execute(
        update(BatchJob)
        .where(BatchJob.seq == seq, BatchJob.status.in_(("validating", "in_progress")))
        .values(status="cancelling", cancelling_at=stamp)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined]


async def answered_lines(session: AsyncSession, batch_seq: int) -> set[int]:
    return set((await session.scalars(select(BatchResult.line).where(BatchResult.batch_seq == batch_seq))).all())


async def result_counts(session: AsyncSession, batch_seq: int) -> tuple[int, int]:
    """(succeeded, failed) results stored for the batch."""
    rows = await session.execute(
        select(BatchResult.ok, func.count()).where(BatchResult.batch_seq == batch_seq).group_by(BatchResult.ok)
    )
    counts = {bool(ok): int(count) for ok, count in rows}
    return counts.get(True, 0), counts.get(False, 0)


async def results_after(
    session: AsyncSession, batch_seq: int, *, ok: bool, after_line: int, limit: int
) -> list[BatchResult]:
    """Stored results in line order, a page at a time."""
    found = await session.scalars(
        select(BatchResult)
        .where(BatchResult.batch_seq == batch_seq, BatchResult.ok.is_(ok), BatchResult.line > after_line)
        .order_by(BatchResult.line)
        .limit(limit)
    )
    return list(found)


async def count_running(session: AsyncSession) -> int:
    """Batches a worker still has to act on: the batch job queue's depth."""
    found = await session.scalar(
        select(func.count()).select_from(BatchJob).where(BatchJob.status.in_(RUNNING), BatchJob.deleted_at.is_(None))
    )
    return int(found or 0)
