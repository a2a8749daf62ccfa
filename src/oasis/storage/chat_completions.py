"""Rows of stored chat completions (`store: true`) and of their metadata pairs."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.pagination import Page, PageRequest, paginate
from oasis.storage.tables import StoredChatCompletion, StoredChatCompletionTag


async def get_completion(session: AsyncSession, project_id: str, completion_id: str) -> StoredChatCompletion | None:
    return await session.scalar(
        select(StoredChatCompletion).where(
            StoredChatCompletion.id == completion_id,
            StoredChatCompletion.project_id == project_id,
            StoredChatCompletion.deleted_at.is_(None),
        )
    )


async def stored_under(session: AsyncSession, completion_id: str) -> StoredChatCompletion | None:
    """The row stored under this id, deleted (a tombstone) or not."""
    return await session.scalar(select(StoredChatCompletion).where(StoredChatCompletion.id == completion_id))


async def list_completions(
    session: AsyncSession, project_id: str, page: PageRequest, model: str | None, metadata: dict[str, str]
) -> Page[StoredChatCompletion]:
    """A page of the project's stored completions, of `model` when given, carrying every pair of `metadata`."""
    filters = [] if model is None else [StoredChatCompletion.model == model]
    for key, value in metadata.items():
        tagged = select(StoredChatCompletionTag.completion_seq).where(
            StoredChatCompletionTag.key == key, StoredChatCompletionTag.value == value
        )
        filters.append(StoredChatCompletion.seq.in_(tagged))
    return await paginate(
        session,
        StoredChatCompletion,
        scope=[StoredChatCompletion.project_id == project_id],
        filters=filters,
        page=page,
    )


async def set_tags(session: AsyncSession, completion_seq: int, metadata: dict[str, str]) -> None:
    """Makes the completion's metadata pairs `metadata`, in the caller's transaction."""
    await session.execute(
        delete(StoredChatCompletionTag).where(StoredChatCompletionTag.completion_seq == completion_seq)
    )
    session.add_all(
        StoredChatCompletionTag(completion_seq=completion_seq, key=key, value=value) for key, value in metadata.items()
    )
