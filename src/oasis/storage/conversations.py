"""Rows of conversations (the Responses API) and of their items."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.pagination import Page, PageRequest, paginate
from oasis.storage.tables import Conversation, ConversationItem


async def get_conversation(session: AsyncSession, project_id: str, conversation_id: str) -> Conversation | None:
    return await session.scalar(
        select(Conversation).where(
            Conversation.id == conversation_id,
            Conversation.project_id == project_id,
            Conversation.deleted_at.is_(None),
        )
    )


async def all_items(session: AsyncSession, conversation_id: str) -> list[ConversationItem]:
    """The conversation's live items, oldest first."""
    rows = await session.scalars(
        select(ConversationItem)
        .where(ConversationItem.conversation_id == conversation_id, ConversationItem.deleted_at.is_(None))
        .order_by(ConversationItem.seq)
    )
    return list(rows.all())


async def list_items(session: AsyncSession, conversation_id: str, page: PageRequest) -> Page[ConversationItem]:
    return await paginate(
        session, ConversationItem, scope=[ConversationItem.conversation_id == conversation_id], page=page
    )


async def get_item(session: AsyncSession, conversation_id: str, item_id: str) -> ConversationItem | None:
    return await session.scalar(
        select(ConversationItem).where(
            ConversationItem.conversation_id == conversation_id,
            ConversationItem.id == item_id,
            ConversationItem.deleted_at.is_(None),
        )
    )
