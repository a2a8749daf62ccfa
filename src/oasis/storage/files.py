"""Rows of uploaded and generated files."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage import containers as container_rows
from oasis.storage.batches import RUNNING
from oasis.storage.clock import now
from oasis.storage.pagination import Page, PageRequest, paginate
from oasis.storage.tables import (
    UNFINISHED_STATUSES,
    BatchJob,
    FineTuningCheckpoint,
    FineTuningJob,
    OwnedModel,
    StoredFile,
    Upload,
    UploadPart,
)
from oasis.storage.uploads import EXPIRED_PARTS_KEPT_SECONDS


async def add_file(session: AsyncSession, file: StoredFile) -> StoredFile:
    session.add(file)
    await session.flush()
    return file


def _unexpired() -> ColumnElement[bool]:
    """Not past its `expires_at`: an expired file is gone for its project, as if deleted, before the expiry job
    deletes it."""
    return or_(StoredFile.expires_at.is_(None), StoredFile.expires_at > now())


def _live() -> ColumnElement[bool]:
    return and_(StoredFile.deleted_at.is_(None), _unexpired())


async def get_file(session: AsyncSession, project_id: str, file_id: str) -> StoredFile | None:
    return await session.scalar(
        select(StoredFile).where(StoredFile.id == file_id, StoredFile.project_id == project_id, _live())
    )


async def expired_files(session: AsyncSession, limit: int) -> list[StoredFile]:
    """Files past their `expires_at` that are not deleted yet, the longest expired first."""
    found = await session.scalars(
        select(StoredFile)
        .where(StoredFile.expires_at <= now(), StoredFile.deleted_at.is_(None))
        .order_by(StoredFile.expires_at)
        .limit(limit)
    )
    return list(found)


async def get_file_by_id(session: AsyncSession, file_id: str, *, deleted_too: bool = False) -> StoredFile | None:
    """A file by id alone, for the server's own work (a batch reading its input, an output written once)."""
    found = select(StoredFile).where(StoredFile.id == file_id)
    if not deleted_too:
        found = found.where(StoredFile.deleted_at.is_(None))
    return await session.scalar(found)


async def referenced_blob_keys(session: AsyncSession, keys: list[str]) -> set[str]:
    """Which of `keys` a live file still points to, or a deleted one whose bytes an unfinished batch or fine-tuning
    job still reads; models', checkpoints' and saved training states' blobs; a pending upload's parts; the files
    of live containers."""
    if not keys:
        return set()
    live = await session.scalars(
        select(StoredFile.blob_key).where(
            StoredFile.blob_key.in_(keys),
            or_(
                StoredFile.deleted_at.is_(None),
                StoredFile.id.in_(_running_batch_inputs()),
                StoredFile.id.in_(_training_files("training_file")),
                StoredFile.id.in_(_training_files("validation_file")),
            ),
        )
    )
    artifacts = await session.scalars(
        select(OwnedModel.artifact_blob_key).where(OwnedModel.artifact_blob_key.in_(keys))
    )
    adapters = await session.scalars(
        select(FineTuningCheckpoint.adapter_blob_key).where(FineTuningCheckpoint.adapter_blob_key.in_(keys))
    )
    states = await session.scalars(select(FineTuningJob.resume_blob_key).where(FineTuningJob.resume_blob_key.in_(keys)))
    parts = await session.scalars(  # the parts of uploads still pending (an upload ended drops its own)
        select(UploadPart.blob_key)
        .join(Upload, Upload.id == UploadPart.upload_id)
        .where(
            UploadPart.blob_key.in_(keys),
            Upload.status == "pending",
            Upload.expires_at > now() - EXPIRED_PARTS_KEPT_SECONDS,
        )
    )
    in_containers = await container_rows.referenced_keys(session, keys, now())
    found = set(live) | set(adapters) | set(parts) | in_containers
    return found | {key for key in [*artifacts, *states] if key is not None}


def _running_batch_inputs() -> Select[Any]:
    return select(BatchJob.input_file_id).where(BatchJob.status.in_(RUNNING))


def _training_files(column: str) -> Select[Any]:
    """The files fine-tuning jobs that have not ended still read (they are read again on each resume)."""
    return select(getattr(FineTuningJob, column)).where(FineTuningJob.status.in_(UNFINISHED_STATUSES))


# Each id is a bound parameter: PostgreSQL (asyncpg) takes at most 32,767 in a statement, and SQLite's builds
# as few as 32,766; a request may name more ids than that.
_IDS_PER_QUERY = 1000


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[start : start + _IDS_PER_QUERY] for start in range(0, len(ids), _IDS_PER_QUERY)]


async def existing_file_ids(
    session: AsyncSession, project_id: str, file_ids: list[str], for_update: bool = False
) -> set[str]:
    """Which of `file_ids` are live files of the project, a query per _IDS_PER_QUERY of them; `for_update` locks
    their rows (in id order) until the transaction ends, so that a delete of one waits for what this makes of it."""
    found: set[str] = set()
    for chunk in _chunks(sorted(set(file_ids))):
        query = (
            select(StoredFile.id)
            .where(StoredFile.id.in_(chunk), StoredFile.project_id == project_id, _live())
            .order_by(StoredFile.id)
        )
        if for_update:
            query = query.with_for_update()
        found.update(await session.scalars(query))
    return found


async def filenames(session: AsyncSession, project_id: str, file_ids: list[str]) -> dict[str, str]:
    """The filename of each of `file_ids` that is a live file of the project, in the order given."""
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(set(file_ids))):
        rows = await session.execute(
            select(StoredFile.id, StoredFile.filename).where(
                StoredFile.id.in_(chunk), StoredFile.project_id == project_id, _live()
            )
        )
        found.update((file_id, filename) for file_id, filename in rows.all())
    return {file_id: found[file_id] for file_id in file_ids if file_id in found}


async def list_files(
    session: AsyncSession, project_id: str, page: PageRequest, purpose: str | None
) -> Page[StoredFile]:
    filters = [_unexpired(), *([StoredFile.purpose == purpose] if purpose is not None else [])]
    return await paginate(session, StoredFile, scope=[StoredFile.project_id == project_id], filters=filters, page=page)


async def mark_deleted(session: AsyncSession, file: StoredFile) -> None:
    file.deleted_at = now()
    await session.flush()
