"""Queries on spoken chat answers' transcripts (tables.SpokenAnswer)."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.tables import SpokenAnswer


async def remember(session: AsyncSession, answer_id: str, project_id: str, transcript: str, expires_at: int) -> None:
    session.add(SpokenAnswer(id=answer_id, project_id=project_id, transcript=transcript, expires_at=expires_at))


async def forget_expired(session: AsyncSession, moment: int) -> None:
    await session.execute(delete(SpokenAnswer).where(SpokenAnswer.expires_at <= moment))


async def transcripts(session: AsyncSession, project_id: str, answer_ids: list[str], moment: int) -> dict[str, str]:
    """The transcripts of the project's answers among `answer_ids` that have not expired, by id."""
    rows = await session.execute(
        select(SpokenAnswer.id, SpokenAnswer.transcript).where(
            SpokenAnswer.id.in_(answer_ids), SpokenAnswer.project_id == project_id, SpokenAnswer.expires_at > moment
        )
    )
    return {answer_id: transcript for answer_id, transcript in rows.all()}
