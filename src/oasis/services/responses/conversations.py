"""Conversations of the Responses API (after the 2.0.0 spec: `client.conversations`): a list of items kept by the
server. A response that names one reads its items before its own input, and its input and output items join it
when it ends (completed or incomplete; a failed response adds nothing). Items can also be added, listed, read and
deleted directly."""

from __future__ import annotations

import json
import time
from typing import Any

from oasis.errors import invalid_request, not_found
from oasis.services.metadata import check_metadata
from oasis.services.responses import code_interpreter, file_search
from oasis.services.responses.items import INCLUDE_LOGPROBS, chat_messages, listed_items
from oasis.storage import conversations as rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database, Session
from oasis.storage.pagination import Page, PageRequest
from oasis.storage.tables import Conversation, ConversationItem

# The most items one request adds (OpenAI's bound).
MAX_ITEMS_ADDED = 20
# `include` values a listing of items takes.
INCLUDABLE = (
    file_search.INCLUDE_RESULTS,
    "message.input_image.image_url",
    INCLUDE_LOGPROBS,
    "reasoning.encrypted_content",
    code_interpreter.INCLUDE_OUTPUTS,
    "computer_call_output.output.image_url",
    "web_search_call.action.sources",
)


def _conversation_body(row: Conversation) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "conversation",
        "created_at": row.created_at,
        "metadata": json.loads(row.metadata_json),
    }


def check_include(include: list[str] | None) -> list[str]:
    for value in include or []:
        if value not in INCLUDABLE:
            raise invalid_request(f"Invalid value '{value}' for include.", param="include")
    return list(include or [])


def _shown(item: dict[str, Any], include: list[str]) -> dict[str, Any]:
    """An item as listed: a search's results, a run's outputs and an answer's logprobs only when `include` asks
    for them."""
    if item.get("type") == "file_search_call" and file_search.INCLUDE_RESULTS not in include:
        return {**item, "results": None}
    if item.get("type") == "code_interpreter_call" and code_interpreter.INCLUDE_OUTPUTS not in include:
        return {**item, "outputs": None}
    if item.get("type") == "message" and INCLUDE_LOGPROBS not in include and isinstance(item.get("content"), list):
        content = [{**part, "logprobs": []} if part.get("logprobs") else part for part in item["content"]]
        return {**item, "content": content}
    return item


def conversation_id_of(value: Any) -> str:
    """A response's `conversation`: an id, or an object with one."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str) and value["id"]:
        return str(value["id"])
    raise invalid_request('`conversation` is a conversation\'s id or `{"id": ...}`.', param="conversation")


class ConversationService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, project_id: str, items: list[dict[str, Any]] | None, metadata: Any) -> dict[str, Any]:
        checked = check_metadata(metadata)
        new_items = self._checked_items(items or [], "items")
        row = Conversation(
            id=new_id("conv_"), project_id=project_id, created_at=int(time.time()), metadata_json=json.dumps(checked)
        )
        async with self._db.session() as session:
            session.add(row)
            await self._add(session, row.id, new_items)
            await session.commit()
        return _conversation_body(row)

    async def retrieve(self, project_id: str, conversation_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            return _conversation_body(await self._row(session, project_id, conversation_id))

    async def update(self, project_id: str, conversation_id: str, metadata: Any) -> dict[str, Any]:
        checked = check_metadata(metadata)
        async with self._db.session() as session:
            row = await self._row(session, project_id, conversation_id)
            row.metadata_json = json.dumps(checked)
            await session.commit()
            return _conversation_body(row)

    async def delete(self, project_id: str, conversation_id: str) -> dict[str, Any]:
        """Deletes the conversation; its items are no longer read or listed (responses that used it stay)."""
        async with self._db.session() as session:
            row = await self._row(session, project_id, conversation_id)
            row.deleted_at = now()
            await session.commit()
        return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}

    async def add_items(
        self, project_id: str, conversation_id: str, items: Any, include: list[str] | None
    ) -> list[dict[str, Any]]:
        shown = check_include(include)
        new_items = self._checked_items(items, "items")
        if not new_items:
            raise invalid_request("Give at least one item to add.", param="items")
        async with self._db.session() as session:
            await self._row(session, project_id, conversation_id)
            added = await self._add(session, conversation_id, new_items)
            await session.commit()
        return [_shown(item, shown) for item in added]

    async def list_items(
        self, project_id: str, conversation_id: str, page: PageRequest, include: list[str] | None
    ) -> Page[dict[str, Any]]:
        shown = check_include(include)
        async with self._db.session() as session:
            await self._row(session, project_id, conversation_id)
            found = await rows.list_items(session, conversation_id, page)
        return Page([_shown(json.loads(row.item_json), shown) for row in found.items], found.has_more)

    async def retrieve_item(
        self, project_id: str, conversation_id: str, item_id: str, include: list[str] | None
    ) -> dict[str, Any]:
        shown = check_include(include)
        async with self._db.session() as session:
            await self._row(session, project_id, conversation_id)
            row = await self._item(session, conversation_id, item_id)
        return _shown(json.loads(row.item_json), shown)

    async def delete_item(self, project_id: str, conversation_id: str, item_id: str) -> dict[str, Any]:
        """Deletes the item (a later response no longer reads it); answers the conversation, as OpenAI's does."""
        async with self._db.session() as session:
            conversation = await self._row(session, project_id, conversation_id)
            row = await self._item(session, conversation_id, item_id)
            row.deleted_at = now()
            await session.commit()
            return _conversation_body(conversation)

    # --- for responses ---------------------------------------------------------------------------------------

    async def items_for_response(self, project_id: str, conversation_id: str) -> list[dict[str, Any]]:
        """The conversation's items, oldest first, whole: what a response that names it reads before its input."""
        async with self._db.session() as session:
            row = await rows.get_conversation(session, project_id, conversation_id)
            if row is None:
                raise not_found(f"Conversation with id '{conversation_id}' not found.", param="conversation")
            return [json.loads(item.item_json) for item in await rows.all_items(session, conversation_id)]

    async def append(self, conversation_id: str, items: list[dict[str, Any]]) -> None:
        """Adds a response's input and output items, in one transaction."""
        async with self._db.session() as session:
            await self._add(session, conversation_id, items)
            await session.commit()

    @classmethod
    async def add_in(cls, session: Session, conversation_id: str, items: list[dict[str, Any]]) -> None:
        """Adds a response's items in the caller's transaction (which stores the response with them)."""
        await cls._add(session, conversation_id, items)

    # --- helpers ---------------------------------------------------------------------------------------------

    @staticmethod
    def _checked_items(items: Any, param: str) -> list[dict[str, Any]]:
        """Items as a conversation keeps them (each with an id and a status), refused as a response's input would be."""
        if not isinstance(items, list):
            raise invalid_request("`items` is a list of items.", param=param)
        if len(items) > MAX_ITEMS_ADDED:
            raise invalid_request(f"Add at most {MAX_ITEMS_ADDED} items at a time.", param=param)
        chat_messages(items, param=param)  # the same items a response could read, or a 400 naming the bad one
        return listed_items(items)

    @staticmethod
    async def _add(session: Session, conversation_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Adds the items in order; one whose id the conversation already has gets a new one (ids page the list)."""
        taken = {row.id for row in await rows.all_items(session, conversation_id)}
        stamp = int(time.time())
        added = []
        for item in items:
            if item["id"] in taken:
                item = {**item, "id": new_id(item["id"].split("_", 1)[0] + "_")}
            taken.add(item["id"])
            session.add(
                ConversationItem(
                    id=item["id"], conversation_id=conversation_id, created_at=stamp, item_json=json.dumps(item)
                )
            )
            added.append(item)
        return added

    @staticmethod
    async def _row(session: Session, project_id: str, conversation_id: str) -> Conversation:
        row = await rows.get_conversation(session, project_id, conversation_id)
        if row is None:
            raise not_found(f"Conversation with id '{conversation_id}' not found.", param="conversation_id")
        return row

    @staticmethod
    async def _item(session: Session, conversation_id: str, item_id: str) -> ConversationItem:
        row = await rows.get_item(session, conversation_id, item_id)
        if row is None:
            raise not_found(f"Item with id '{item_id}' not found in conversation.", param="item_id")
        return row
