"""Rows of uploaded and generated files."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.clock import now
from oasis.storage.pagination import Page, PageRequest, paginate
from oasis.storage.tables import StoredFile


async def add_file(session: AsyncSession, file: StoredFile) -> StoredFile:
    session.add(file)
    await session.flush()
    return file


async def get_file(session: AsyncSession, project_id: str, file_id: str) -> StoredFile | None:
    return await session.scalar(
        select(StoredFile).where(
            StoredFile.id == file_id, StoredFile.project_id == project_id, StoredFile.deleted_at.is_(None)
        )
    )


async def existing_file_ids(session: AsyncSession, project_id: str, file_ids: list[str]) -> set[str]:
    """Which of `file_ids` are live files of the project, in one query."""
    if not file_ids:
        return set()
    found = await session.scalars(
        select(StoredFile.id).where(
            StoredFile.id.in_(set(file_ids)), StoredFile.project_id == project_id, StoredFile.deleted_at.is_(None)
        )
    )
    return set(found)


async def list_files(
    session: AsyncSession, project_id: str, page: PageRequest, purpose: str | None
) -> Page[StoredFile]:
    filters = [StoredFile.purpose == purpose] if purpose is not None else []
    return await paginate(session, StoredFile, scope=[StoredFile.project_id == project_id], filters=filters, page=page)


async def mark_deleted(session: AsyncSession, file: StoredFile) -> None:
    file.deleted_at = now()
    await session.flush()
