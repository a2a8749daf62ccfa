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


async def chain(session: AsyncSession, last: StoredResponse) -> list[StoredResponse]:
    """The responses a response continues and itself, oldest first. A deleted one is still a link (its turn was
    emptied when it was deleted); one from another project never is."""
    rows = [last]
    seen = {last.id}
    while rows[-1].previous_response_id is not None and rows[-1].previous_response_id not in seen:
        earlier = await session.scalar(
            select(StoredResponse).where(
                StoredResponse.id == rows[-1].previous_response_id, StoredResponse.project_id == last.project_id
            )
        )
        if earlier is None:
            break
        rows.append(earlier)
        seen.add(earlier.id)
    return rows[::-1]
