"""Rows of runs (each one its own job) and their steps."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.leases import database_now, held_by
from oasis.storage.pagination import Page, PageRequest, paginate
from oasis.storage.tables import ACTIVE_RUN_STATUSES, Run, RunStep


async def get_run(session: AsyncSession, thread_id: str, run_id: str) -> Run | None:
    return await session.scalar(
        select(Run).where(Run.id == run_id, Run.thread_id == thread_id, Run.deleted_at.is_(None))
    )


async def list_runs(session: AsyncSession, thread_id: str, page: PageRequest) -> Page[Run]:
    return await paginate(session, Run, scope=[Run.thread_id == thread_id], page=page)


async def active_run(session: AsyncSession, thread_id: str) -> Run | None:
    return await session.scalar(
        select(Run).where(Run.thread_id == thread_id, Run.status.in_(ACTIVE_RUN_STATUSES), Run.deleted_at.is_(None))
    )


async def update_held(
    session: AsyncSession, seq: int, owner: str, statuses: tuple[str, ...], values: dict[str, Any]
) -> bool:
    """Writes `values` only while `owner` holds the run's lease, the run is live (not deleted) and in one of
    `statuses` (a cancel that came in meanwhile wins)."""
    moved = await session.execute(
        update(Run)
        .where(*held_by(Run, seq, owner), Run.deleted_at.is_(None), Run.status.in_(statuses))
        .values(**values)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined]


async def get_step(session: AsyncSession, run_id: str, step_id: str) -> RunStep | None:
    return await session.scalar(
        select(RunStep).where(RunStep.id == step_id, RunStep.run_id == run_id, RunStep.deleted_at.is_(None))
    )


async def list_steps(session: AsyncSession, run_id: str, page: PageRequest) -> Page[RunStep]:
    return await paginate(session, RunStep, scope=[RunStep.run_id == run_id], page=page)


async def run_steps(session: AsyncSession, run_id: str) -> list[RunStep]:
    found = await session.scalars(
        select(RunStep).where(RunStep.run_id == run_id, RunStep.deleted_at.is_(None)).order_by(RunStep.seq)
    )
    return list(found)


async def tool_steps(session: AsyncSession, thread_id: str) -> list[RunStep]:
    """The thread's tool-call steps, oldest first: the calls (and outputs) the model is shown again."""
    found = await session.scalars(
        select(RunStep)
        .where(RunStep.thread_id == thread_id, RunStep.type == "tool_calls", RunStep.deleted_at.is_(None))
        .order_by(RunStep.seq)
    )
    return list(found)


async def move(session: AsyncSession, seq: int, status: str, values: dict[str, Any]) -> bool:
    """Writes `values` if the run is still in `status` (another writer may have moved it meanwhile)."""
    moved = await session.execute(update(Run).where(Run.seq == seq, Run.status == status).values(**values))
    return moved.rowcount == 1  # type: ignore[attr-defined]


async def set_metadata(session: AsyncSession, seq: int, metadata_json: str) -> None:
    """Only the metadata column: the executor may be writing the run's status at the same moment."""
    await session.execute(update(Run).where(Run.seq == seq).values(metadata_json=metadata_json))


async def move_before_expiry(session: AsyncSession, seq: int, status: str, values: dict[str, Any]) -> bool:
    """`move`, only while the run has not expired in the database's clock: the exact complement of when a worker
    expires it (`expires_at + 1 <= database_now()`)."""
    alive = Run.expires_at + 1 > database_now()
    moved = await session.execute(update(Run).where(Run.seq == seq, Run.status == status, alive).values(**values))
    return moved.rowcount == 1  # type: ignore[attr-defined]
