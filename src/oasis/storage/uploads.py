"""Rows of uploads sent in parts, and of their parts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.tables import Upload, UploadPart


async def get_upload(session: AsyncSession, project_id: str, upload_id: str) -> Upload | None:
    return await session.scalar(select(Upload).where(Upload.id == upload_id, Upload.project_id == project_id))


async def parts(session: AsyncSession, upload_id: str) -> list[UploadPart]:
    return list(await session.scalars(select(UploadPart).where(UploadPart.upload_id == upload_id)))


async def end(session: AsyncSession, upload: Upload, moment: int, *, expired_too: bool = False, **values: Any) -> bool:
    """Moves a pending upload on (completed, cancelled) unless another request did first or (but `expired_too`)
    it expired."""
    conditions = [Upload.seq == upload.seq, Upload.status == "pending"]
    if not expired_too:
        conditions.append(Upload.expires_at > moment)
    moved = await session.execute(update(Upload).where(*conditions).values(**values))
    return moved.rowcount == 1  # type: ignore[attr-defined]
