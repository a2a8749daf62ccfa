"""Rows of threads and their messages."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.pagination import Page, PageRequest, paginate
from oasis.storage.tables import Run, RunStep, Thread, ThreadMessage


async def get_thread(session: AsyncSession, project_id: str, thread_id: str, for_update: bool = False) -> Thread | None:
    """The live thread; `for_update` locks its row until the transaction ends (PostgreSQL; SQLite's writers are
    serialized anyway), for a read-modify-write of its fields."""
    query = select(Thread).where(Thread.id == thread_id, Thread.project_id == project_id, Thread.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return await session.scalar(query)


async def delete_thread(session: AsyncSession, thread: Thread, stamp: int) -> None:
    """Tombstones the thread with its messages, runs and steps; a run still going stops at its next write."""
    thread.deleted_at = stamp
    for table in (ThreadMessage, Run, RunStep):
        await session.execute(
            update(table).where(table.thread_id == thread.id, table.deleted_at.is_(None)).values(deleted_at=stamp)
        )


async def get_message(session: AsyncSession, thread_id: str, message_id: str) -> ThreadMessage | None:
    return await session.scalar(
        select(ThreadMessage).where(
            ThreadMessage.id == message_id, ThreadMessage.thread_id == thread_id, ThreadMessage.deleted_at.is_(None)
        )
    )


async def list_messages(
    session: AsyncSession, thread_id: str, page: PageRequest, run_id: str | None = None
) -> Page[ThreadMessage]:
    filters = [ThreadMessage.run_id == run_id] if run_id is not None else []
    return await paginate(
        session, ThreadMessage, scope=[ThreadMessage.thread_id == thread_id], filters=filters, page=page
    )


async def conversation(session: AsyncSession, thread_id: str) -> list[ThreadMessage]:
    """The thread's live messages, oldest first: what a run shows the model."""
    found = await session.scalars(
        select(ThreadMessage)
        .where(ThreadMessage.thread_id == thread_id, ThreadMessage.deleted_at.is_(None))
        .order_by(ThreadMessage.seq)
    )
    return list(found)


async def newest_message_seq(session: AsyncSession, thread_id: str) -> int:
    found = await session.scalar(select(func.max(ThreadMessage.seq)).where(ThreadMessage.thread_id == thread_id))
    return int(found or 0)
