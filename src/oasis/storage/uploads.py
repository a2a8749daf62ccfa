"""Rows of uploads sent in parts, and of their parts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.tables import Upload, UploadPart

# How long past its expiry an upload's parts are still kept (the blob sweeper's to remove after): a completion that
# began before the upload expired reads them to the end.
EXPIRED_PARTS_KEPT_SECONDS = 3600


async def get_upload(session: AsyncSession, project_id: str, upload_id: str) -> Upload | None:
    return await session.scalar(select(Upload).where(Upload.id == upload_id, Upload.project_id == project_id))


async def parts(session: AsyncSession, upload_id: str) -> list[UploadPart]:
    return list(await session.scalars(select(UploadPart).where(UploadPart.upload_id == upload_id)))


async def hold_pending(session: AsyncSession, upload_id: str, moment: int) -> bool:
    """Whether the upload is pending, its row locked until the transaction ends (a part is added to an upload that
    no completion or cancel has moved on meanwhile; SQLite's writers are serialized anyway)."""
    held = await session.execute(
        update(Upload)
        .where(Upload.id == upload_id, Upload.status == "pending", Upload.expires_at > moment)
        .values(status=Upload.status)
    )
    return held.rowcount == 1  # type: ignore[attr-defined]


async def end(session: AsyncSession, upload: Upload, moment: int, *, expired_too: bool = False, **values: Any) -> bool:
    """Moves a pending upload on (completed, cancelled) unless another request did first or (but `expired_too`)
    it expired."""
    conditions = [Upload.seq == upload.seq, Upload.status == "pending"]
    if not expired_too:
        conditions.append(Upload.expires_at > moment)
    moved = await session.execute(update(Upload).where(*conditions).values(**values))
    return moved.rowcount == 1  # type: ignore[attr-defined]
