"""Rows of stored responses (the Responses API)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.tables import StoredResponse


async def get_response(session: AsyncSession, project_id: str, response_id: str) -> StoredResponse | None:
    return await session.scalar(
        select(StoredResponse).where(
            StoredResponse.id == response_id,
            StoredResponse.project_id == project_id,
            StoredResponse.deleted_at.is_(None),
        )
    )
