"""Rows of assistants."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.pagination import Page, PageRequest, paginate
from oasis.storage.tables import Assistant


async def get_assistant(session: AsyncSession, project_id: str, assistant_id: str) -> Assistant | None:
    return await session.scalar(
        select(Assistant).where(
            Assistant.id == assistant_id, Assistant.project_id == project_id, Assistant.deleted_at.is_(None)
        )
    )


async def list_assistants(session: AsyncSession, project_id: str, page: PageRequest) -> Page[Assistant]:
    return await paginate(session, Assistant, scope=[Assistant.project_id == project_id], page=page)
