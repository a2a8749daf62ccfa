"""Rows of vector stores, their files and file batches, and the chunks that make them searchable."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from sqlalchemy import ColumnElement, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.clock import now
from oasis.storage.db import Database
from oasis.storage.pagination import Page, PageRequest, paginate
from oasis.storage.tables import StoredFile, VectorStore, VectorStoreChunk, VectorStoreFile, VectorStoreFileBatch

# A file attachment still to be ingested (or being ingested): the ingestion job's row while it is wanted.
WAITING_FILE = (VectorStoreFile.status == "in_progress", VectorStoreFile.deleted_at.is_(None))


def _file_unexpired() -> ColumnElement[bool]:
    """The attached file is not past its `expires_at`: an expired file leaves its stores' lists and counts at once,
    as it leaves its project's, before the expiry job detaches it."""
    return ~exists().where(StoredFile.id == VectorStoreFile.id, StoredFile.expires_at <= now())


async def get_store(
    session: AsyncSession, project_id: str, store_id: str, for_update: bool = False
) -> VectorStore | None:
    """The live store; `for_update` locks its row until the transaction ends (PostgreSQL; SQLite's writers are
    serialized anyway)."""
    query = select(VectorStore).where(
        VectorStore.id == store_id, VectorStore.project_id == project_id, VectorStore.deleted_at.is_(None)
    )
    if for_update:
        query = query.with_for_update().execution_options(populate_existing=True)
    return await session.scalar(query)


async def list_stores(session: AsyncSession, project_id: str, page: PageRequest) -> Page[VectorStore]:
    return await paginate(session, VectorStore, scope=[VectorStore.project_id == project_id], page=page)


async def file_stats(session: AsyncSession, store_ids: Iterable[str]) -> dict[str, tuple[Counter[str], int]]:
    """Per store: how many live files are in each status, and the bytes their chunks use."""
    ids = list(store_ids)
    stats: dict[str, tuple[Counter[str], int]] = {store_id: (Counter(), 0) for store_id in ids}
    if not ids:
        return stats
    rows = await session.execute(
        select(
            VectorStoreFile.vector_store_id,
            VectorStoreFile.status,
            func.count(),
            func.coalesce(func.sum(VectorStoreFile.usage_bytes), 0),
        )
        .where(VectorStoreFile.vector_store_id.in_(ids), VectorStoreFile.deleted_at.is_(None), _file_unexpired())
        .group_by(VectorStoreFile.vector_store_id, VectorStoreFile.status)
    )
    for store_id, status, count, usage in rows:
        counts, total = stats[store_id]
        counts[status] += count
        stats[store_id] = (counts, total + (int(usage) if status == "completed" else 0))
    return stats


async def batch_counts(session: AsyncSession, batch_id: str) -> Counter[str]:
    rows = await session.execute(
        select(VectorStoreFile.status, func.count())
        .where(VectorStoreFile.batch_id == batch_id, VectorStoreFile.deleted_at.is_(None), _file_unexpired())
        .group_by(VectorStoreFile.status)
    )
    return Counter({status: count for status, count in rows})


async def get_file(session: AsyncSession, project_id: str, store_id: str, file_id: str) -> VectorStoreFile | None:
    return await session.scalar(
        select(VectorStoreFile).where(
            VectorStoreFile.id == file_id,
            VectorStoreFile.vector_store_id == store_id,
            VectorStoreFile.project_id == project_id,
            VectorStoreFile.deleted_at.is_(None),
            _file_unexpired(),
        )
    )


async def attached_files(session: AsyncSession, store_id: str, file_ids: list[str]) -> list[VectorStoreFile]:
    """The live attachments to the store among `file_ids`, in one query."""
    found = await session.scalars(
        select(VectorStoreFile).where(
            VectorStoreFile.vector_store_id == store_id,
            VectorStoreFile.id.in_(file_ids),
            VectorStoreFile.deleted_at.is_(None),
        )
    )
    return list(found)


async def list_files(
    session: AsyncSession, store_id: str, page: PageRequest, status: str | None, batch_id: str | None = None
) -> Page[VectorStoreFile]:
    filters = [_file_unexpired()]  # a filter, not the scope: an expired file still anchors a cursor
    if status:
        filters.append(VectorStoreFile.status == status)
    scope = [VectorStoreFile.vector_store_id == store_id]
    if batch_id is not None:
        scope.append(VectorStoreFile.batch_id == batch_id)
    return await paginate(session, VectorStoreFile, scope=scope, filters=filters, page=page)


async def get_batch(
    session: AsyncSession, project_id: str, store_id: str, batch_id: str
) -> VectorStoreFileBatch | None:
    return await session.scalar(
        select(VectorStoreFileBatch).where(
            VectorStoreFileBatch.id == batch_id,
            VectorStoreFileBatch.vector_store_id == store_id,
            VectorStoreFileBatch.project_id == project_id,
        )
    )


async def drop_chunks(session: AsyncSession, *, file_seq: int | None = None, store_id: str | None = None) -> None:
    statement = delete(VectorStoreChunk)
    if file_seq is not None:
        statement = statement.where(VectorStoreChunk.file_seq == file_seq)
    if store_id is not None:
        statement = statement.where(VectorStoreChunk.vector_store_id == store_id)
    await session.execute(statement)


async def drop_some_chunks(session: AsyncSession, store_id: str, limit: int) -> int:
    """Deletes up to `limit` chunks of a store; returns how many. A large store is deleted in such steps, each its
    own transaction, so SQLite's single writer lock is never held for the whole store."""
    some = select(VectorStoreChunk.id).where(VectorStoreChunk.vector_store_id == store_id).limit(limit)
    done = await session.execute(delete(VectorStoreChunk).where(VectorStoreChunk.id.in_(some.scalar_subquery())))
    return int(done.rowcount)  # type: ignore[attr-defined]


# Chunks deleted per transaction when a store goes: small enough that other writers wait milliseconds, not the
# whole delete.
PURGE_STEP = 2000


async def purge_store_chunks(db: Database, store_id: str) -> int:
    """Deletes every chunk of a (deleted) store in bounded committed steps; returns how many."""
    total = 0
    while True:
        async with db.session() as session:
            removed = await drop_some_chunks(session, store_id, PURGE_STEP)
            await session.commit()
        total += removed
        if removed < PURGE_STEP:
            return total


async def deleted_stores_with_chunks(session: AsyncSession, limit: int) -> list[str]:
    """Deleted stores whose chunks are still stored (a crash stopped the delete part way)."""
    deleted = select(VectorStore.id).where(VectorStore.deleted_at.is_not(None))
    found = await session.scalars(
        select(VectorStoreChunk.vector_store_id)
        .where(VectorStoreChunk.vector_store_id.in_(deleted.scalar_subquery()))
        .distinct()
        .limit(limit)
    )
    return list(found)


async def bump_version(session: AsyncSession, store_id: str) -> None:
    await session.execute(
        update(VectorStore).where(VectorStore.id == store_id).values(content_version=VectorStore.content_version + 1)
    )


async def count_waiting_files(session: AsyncSession) -> int:
    """Files still to be ingested (running or waiting for a worker): the ingestion job queue's depth."""
    found = await session.scalar(select(func.count()).select_from(VectorStoreFile).where(*WAITING_FILE))
    return int(found or 0)


async def tombstone_store_files(session: AsyncSession, store_id: str, stamp: int) -> None:
    """Marks every live file of a store deleted with the store (a worker holding one stops at its next step)."""
    await session.execute(
        update(VectorStoreFile)
        .where(VectorStoreFile.vector_store_id == store_id, VectorStoreFile.deleted_at.is_(None))
        .values(deleted_at=stamp)
    )


async def detach_everywhere(session: AsyncSession, project_id: str, file_id: str, stamp: int) -> None:
    """Takes a deleted file out of every store that holds it: its attachments tombstoned (a worker ingesting
    one stops at its next step), its chunks dropped, and the stores' content versions moved on, so that no
    replica's search returns its text again."""
    attached = list(
        (
            await session.execute(
                select(VectorStoreFile.seq, VectorStoreFile.vector_store_id).where(
                    VectorStoreFile.id == file_id,
                    VectorStoreFile.project_id == project_id,
                    VectorStoreFile.deleted_at.is_(None),
                )
            )
        ).all()
    )
    if not attached:
        return
    # The stores first, in id order, then their attachments: the order a store's delete takes its rows in, so
    # that two deletes on PostgreSQL never wait on each other in a circle.
    for store_id in sorted({store_id for _, store_id in attached}):
        await bump_version(session, store_id)
    seqs = [seq for seq, _ in attached]
    await session.execute(update(VectorStoreFile).where(VectorStoreFile.seq.in_(seqs)).values(deleted_at=stamp))
    await session.execute(delete(VectorStoreChunk).where(VectorStoreChunk.file_seq.in_(seqs)))


async def cancel_unfinished_files(session: AsyncSession, batch_id: str) -> list[int]:
    """Cancels a file batch's files still in progress (releasing their leases); their row numbers."""
    cancelled = await session.scalars(
        update(VectorStoreFile)
        .where(VectorStoreFile.batch_id == batch_id, *WAITING_FILE)
        .values(status="cancelled", lease_owner=None, lease_expires_at=None, usage_bytes=0)  # its chunks go
        .returning(VectorStoreFile.seq)
    )
    return list(cancelled)
