"""Rows of stored responses (the Responses API), and the events of background responses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.leases import database_now, held_by
from oasis.storage.tables import Conversation, ConversationItem, ResponseEvent, StoredResponse

# A response's statuses after which nothing more is generated.
FINAL_STATUSES = ("completed", "incomplete", "failed", "cancelled")


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


async def stored_item(session: AsyncSession, project_id: str, item_id: str) -> dict[str, Any] | None:
    """An item the project has stored under `item_id`: a stored response's input or output item, or a
    conversation's item (the newest that has it). Items are found by their id in the stored JSON (no index: a
    reference is rare, and its response's JSON is read once)."""
    found = await session.scalar(
        select(ConversationItem.item_json)
        .join(Conversation, Conversation.id == ConversationItem.conversation_id)
        .where(
            ConversationItem.id == item_id,
            ConversationItem.deleted_at.is_(None),
            Conversation.project_id == project_id,
            Conversation.deleted_at.is_(None),
        )
        .order_by(ConversationItem.seq.desc())
        .limit(1)
    )
    if found is not None:
        return dict(json.loads(found))
    named = f'"id": {json.dumps(item_id)}'
    rows = await session.execute(
        select(StoredResponse.response_json, StoredResponse.input_items_json)
        .where(
            StoredResponse.project_id == project_id,
            StoredResponse.deleted_at.is_(None),
            or_(
                StoredResponse.response_json.contains(named, autoescape=True),
                StoredResponse.input_items_json.contains(named, autoescape=True),
            ),
        )
        .order_by(StoredResponse.seq.desc())
    )
    for response_json, input_items_json in rows:  # the text may also match elsewhere (metadata): the item decides
        items = [*json.loads(input_items_json), *(json.loads(response_json).get("output") or [])]
        for item in items:
            if isinstance(item, dict) and item.get("id") == item_id:
                return dict(item)
    return None


async def approval_used(session: AsyncSession, project_id: str, request_id: str) -> bool:
    """Whether a stored response of the project made the MCP call this approval request asked for."""
    named = f'"approval_request_id": {json.dumps(request_id)}'
    found = await session.scalars(
        select(StoredResponse.response_json).where(
            StoredResponse.project_id == project_id,
            StoredResponse.deleted_at.is_(None),
            StoredResponse.response_json.contains(named, autoescape=True),
        )
    )
    return any(
        isinstance(item, dict) and item.get("type") == "mcp_call" and item.get("approval_request_id") == request_id
        for response_json in found
        for item in json.loads(response_json).get("output") or []
    )


async def status_of(session: AsyncSession, response_id: str) -> tuple[str | None, bool]:
    """The response's status (None once it is deleted), and whether a worker holds it (a live lease)."""
    leased = and_(StoredResponse.lease_owner.is_not(None), StoredResponse.lease_expires_at >= database_now())
    found = await session.execute(
        select(StoredResponse.status, leased).where(
            StoredResponse.id == response_id, StoredResponse.deleted_at.is_(None)
        )
    )
    row = found.first()
    return (None, False) if row is None else (row[0], bool(row[1]))


async def update_held(
    session: AsyncSession, seq: int, owner: str, statuses: tuple[str, ...], values: dict[str, Any]
) -> bool:
    """Writes `values` only while `owner` holds the background response's lease, the response is live (not
    deleted) and in one of `statuses` (a cancel that came in meanwhile wins)."""
    moved = await session.execute(
        update(StoredResponse)
        .where(*held_by(StoredResponse, seq, owner), StoredResponse.deleted_at.is_(None))
        .where(StoredResponse.status.in_(statuses))
        .values(**values)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined]


# What a background response's row holds only while it is its job, cleared once it ends: the request as sent (its
# MCP tools' keys among it) and the checkpoint a crashed generation resumes from.
JOB_DONE: dict[str, Any] = {"request_json": None, "checkpoint_json": None}


async def cancel(session: AsyncSession, seq: int, response_json: str) -> bool:
    """Marks a background response cancelled unless it finished meanwhile."""
    moved = await session.execute(
        update(StoredResponse)
        .where(StoredResponse.seq == seq, StoredResponse.status.in_(("queued", "in_progress")))
        .values(status="cancelled", response_json=response_json, **JOB_DONE)
    )
    return moved.rowcount == 1  # type: ignore[attr-defined]


async def set_next_event(session: AsyncSession, response_id: str, number: int) -> None:
    await session.execute(update(StoredResponse).where(StoredResponse.id == response_id).values(next_event=number))


def add_events(session: AsyncSession, response_id: str, generation: str, events: Sequence[dict[str, Any]]) -> None:
    session.add_all(
        ResponseEvent(
            response_id=response_id,
            generation=generation,
            sequence_number=event["sequence_number"],
            event_json=json.dumps(event),
        )
        for event in events
    )


async def drop_events(session: AsyncSession, response_id: str, from_number: int = 0) -> None:
    """Removes the response's events numbered `from_number` and after."""
    await session.execute(
        delete(ResponseEvent).where(
            ResponseEvent.response_id == response_id, ResponseEvent.sequence_number >= from_number
        )
    )


async def events_after(session: AsyncSession, response_id: str, after_seq: int, limit: int) -> list[ResponseEvent]:
    """The response's events written after row `after_seq`, in the order they were written."""
    found = await session.scalars(
        select(ResponseEvent)
        .where(ResponseEvent.response_id == response_id, ResponseEvent.seq > after_seq)
        .order_by(ResponseEvent.seq)
        .limit(limit)
    )
    return list(found)
