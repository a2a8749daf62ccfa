"""Rows of fine-tuning jobs, their events and their checkpoints."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.leases import held_by
from oasis.storage.pagination import Page, PageRequest, paginate
from oasis.storage.tables import (
    TRAINING_STATUSES,
    UNFINISHED_STATUSES,
    FineTuningCheckpoint,
    FineTuningEvent,
    FineTuningJob,
)


async def get_job(session: AsyncSession, project_id: str, job_id: str) -> FineTuningJob | None:
    return await session.scalar(
        select(FineTuningJob).where(FineTuningJob.id == job_id, FineTuningJob.project_id == project_id)
    )


async def list_jobs(
    session: AsyncSession, project_id: str, page: PageRequest, metadata: dict[str, str] | None = None
) -> Page[FineTuningJob]:
    scope = [FineTuningJob.project_id == project_id]
    if metadata is None:
        return await paginate(session, FineTuningJob, scope=scope, page=page)
    # Metadata is stored as JSON text: matched here, a page of rows at a time (a project has few jobs)
    matching: list[FineTuningJob] = []
    cursor = page
    while True:
        found = await paginate(session, FineTuningJob, scope=scope, page=replace(cursor, limit=100))
        matching.extend(row for row in found.items if _holds(row.metadata_json, metadata))
        if len(matching) > page.limit or not found.has_more:
            return Page(items=matching[: page.limit], has_more=len(matching) > page.limit)
        cursor = replace(cursor, after=found.items[-1].id)


def _holds(metadata_json: str | None, pairs: dict[str, str]) -> bool:
    metadata = json.loads(metadata_json) if metadata_json else {}
    if not pairs:
        return not metadata
    return all(metadata.get(key) == value for key, value in pairs.items())


async def list_events(session: AsyncSession, job_id: str, page: PageRequest) -> Page[FineTuningEvent]:
    return await paginate(session, FineTuningEvent, scope=[FineTuningEvent.job_id == job_id], page=page)


async def list_checkpoints(session: AsyncSession, job_id: str, page: PageRequest) -> Page[FineTuningCheckpoint]:
    return await paginate(session, FineTuningCheckpoint, scope=[FineTuningCheckpoint.job_id == job_id], page=page)


async def checkpoints(session: AsyncSession, job_id: str) -> list[FineTuningCheckpoint]:
    found = await session.scalars(
        select(FineTuningCheckpoint).where(FineTuningCheckpoint.job_id == job_id).order_by(FineTuningCheckpoint.seq)
    )
    return list(found)


async def checkpoint_model(session: AsyncSession, project_id: str, name: str) -> FineTuningCheckpoint | None:
    """The checkpoint served under `name` (`ft:…:ckpt-step-N`), in the project."""
    return await session.scalar(
        select(FineTuningCheckpoint).where(
            FineTuningCheckpoint.fine_tuned_model_checkpoint == name, FineTuningCheckpoint.project_id == project_id
        )
    )


async def metric_events(session: AsyncSession, job_id: str) -> list[FineTuningEvent]:
    found = await session.scalars(
        select(FineTuningEvent)
        .where(FineTuningEvent.job_id == job_id, FineTuningEvent.type == "metrics")
        .order_by(FineTuningEvent.seq)
    )
    return list(found)


async def last_recorded_step(session: AsyncSession, job_id: str) -> int:
    """The newest step whose metrics are recorded: a job resumed after a crash repeats the steps after its last
    saved state, and those must not be recorded twice."""
    events = await metric_events(session, job_id)
    return max((int(json.loads(event.data_json or "{}").get("step", 0)) for event in events), default=0)


async def update_held(
    session: AsyncSession, seq: int, owner: str, statuses: tuple[str, ...], values: dict[str, Any]
) -> bool:
    """Writes `values` only while `owner` holds the lease and the job is in one of `statuses`."""
    moved = await session.execute(
        update(FineTuningJob)
        .where(*held_by(FineTuningJob, seq, owner), FineTuningJob.status.in_(statuses))
        .values(**values)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined]


async def count_training(session: AsyncSession) -> int:
    """Jobs a worker still has to act on: the fine-tuning queue's depth."""
    found = await session.scalar(
        select(func.count()).select_from(FineTuningJob).where(FineTuningJob.status.in_(TRAINING_STATUSES))
    )
    return int(found or 0)


async def release(session: AsyncSession, seq: int, owner: str) -> None:
    """Gives the lease up, whatever the job's status (a cancelled job's lease too)."""
    await session.execute(
        update(FineTuningJob).where(*held_by(FineTuningJob, seq, owner)).values(lease_owner=None, lease_expires_at=None)
    )


async def clear_resume_state(session: AsyncSession, seq: int) -> str | None:
    """Forgets the saved training state of a job that ended; returns its blob key to delete."""
    job = await session.get(FineTuningJob, seq)
    if job is None or job.status in UNFINISHED_STATUSES or job.resume_blob_key is None:
        return None
    key = job.resume_blob_key
    job.resume_blob_key = None
    return key


async def cancel(session: AsyncSession, job: FineTuningJob, moment: int) -> bool:
    """Marks the job cancelled unless it ended meanwhile (a worker finishing it at the same moment wins)."""
    return await _move(session, job, UNFINISHED_STATUSES, status="cancelled", finished_at=moment)


async def pause(session: AsyncSession, job: FineTuningJob) -> bool:
    """Marks a running job paused (its worker stops the trainer within a second, keeping the state it saved)."""
    return await _move(session, job, ("running",), status="paused")


async def resume(session: AsyncSession, job: FineTuningJob) -> bool:
    """Queues a paused job again: a worker takes it up and trains on from its saved state. A pause is no crash:
    the leases before it count no more towards giving up."""
    return await _move(session, job, ("paused",), status="queued", attempts=0)


async def _move(session: AsyncSession, job: FineTuningJob, statuses: tuple[str, ...], **values: Any) -> bool:
    """Writes `values` only while the job is in one of `statuses` (a worker may move it on at the same moment)."""
    moved = await session.execute(
        update(FineTuningJob).where(FineTuningJob.seq == job.seq, FineTuningJob.status.in_(statuses)).values(**values)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined]


async def files_in_training(session: AsyncSession, file_ids: list[str]) -> set[str]:
    """Which of these files a job that has not ended still reads (its training or validation file)."""
    if not file_ids:
        return set()
    rows = await session.execute(
        select(FineTuningJob.training_file, FineTuningJob.validation_file).where(
            FineTuningJob.status.in_(UNFINISHED_STATUSES),
            or_(FineTuningJob.training_file.in_(file_ids), FineTuningJob.validation_file.in_(file_ids)),
        )
    )
    return {file_id for pair in rows for file_id in pair if file_id in file_ids}
