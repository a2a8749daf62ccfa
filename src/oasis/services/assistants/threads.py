"""Threads and their messages. A thread with a live run takes no new message until the run ends."""

from __future__ import annotations

import json
from typing import Any

from oasis.errors import invalid_request, not_found
from oasis.protocol.assistants import (
    CreateMessageRequest,
    CreateThreadRequest,
    ModifyMessageRequest,
    ModifyThreadRequest,
)
from oasis.services.assistants.resources import index_attachments, message_parts, tool_resources_to_store
from oasis.services.assistants.wire import message_to_wire, thread_to_wire
from oasis.services.metadata import check_metadata
from oasis.services.vector_stores.service import VectorStoreService
from oasis.storage import runs as run_rows
from oasis.storage import threads as rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database, Session
from oasis.storage.pagination import Page, PageRequest
from oasis.storage.tables import Thread, ThreadMessage


async def add_messages(
    session: Session,
    project_id: str,
    thread_id: str,
    requests: list[CreateMessageRequest],
    param: str,
    vector_stores: VectorStoreService,
) -> list[ThreadMessage]:
    """New user or assistant messages at the end of the thread (not committed); files attached for file_search
    go into the thread's vector store (the caller wakes the workers after committing). `param` names the list the
    requests came in (errors name `messages[1].content`), or is "" for the one message of a request."""
    added = []
    searched: list[str] = []
    stamp = now()
    for position, request in enumerate(requests):
        where = f"{param}[{position}]." if param else ""
        content, attachments = await message_parts(session, project_id, request, where)
        row = ThreadMessage(
            id=new_id("msg_"),
            project_id=project_id,
            thread_id=thread_id,
            created_at=stamp,
            role=request.role,
            content_json=json.dumps(content),
            attachments_json=json.dumps(attachments),
            metadata_json=json.dumps(check_metadata(request.metadata, param=f"{where}metadata")),
            status="completed",
            completed_at=stamp,
        )
        session.add(row)
        added.append(row)
        searched.extend(
            item["file_id"] for item in attachments if any(tool["type"] == "file_search" for tool in item["tools"])
        )
    await session.flush()
    if searched:
        # Locked: two messages attaching files at once must not each make the thread a store of its own.
        thread = await rows.get_thread(session, project_id, thread_id, for_update=True)
        assert thread is not None  # the caller found it in this transaction
        await index_attachments(session, project_id, thread, list(dict.fromkeys(searched)), vector_stores)
    return added


async def new_thread(
    session: Session,
    project_id: str,
    request: CreateThreadRequest,
    vector_stores: VectorStoreService,
    param: str = "",
) -> Thread:
    prefix = f"{param}." if param else ""
    metadata = check_metadata(request.metadata, param=f"{prefix}metadata")
    resources = await tool_resources_to_store(
        session, project_id, request.tool_resources, vector_stores, param=f"{prefix}tool_resources"
    )
    thread = Thread(
        id=new_id("thread_"),
        project_id=project_id,
        created_at=now(),
        tool_resources_json=json.dumps(resources),
        metadata_json=json.dumps(metadata),
    )
    session.add(thread)
    await session.flush()
    await add_messages(session, project_id, thread.id, request.messages or [], f"{prefix}messages", vector_stores)
    return thread


class ThreadService:
    def __init__(self, db: Database, vector_stores: VectorStoreService) -> None:
        self._db = db
        self._vector_stores = vector_stores

    async def create(self, project_id: str, request: CreateThreadRequest) -> dict[str, Any]:
        async with self._db.session() as session:
            thread = await new_thread(session, project_id, request, self._vector_stores)
            await session.commit()
        self._vector_stores.wake()
        return thread_to_wire(thread)

    async def retrieve(self, project_id: str, thread_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            return thread_to_wire(await thread_row(session, project_id, thread_id))

    async def modify(self, project_id: str, thread_id: str, request: ModifyThreadRequest) -> dict[str, Any]:
        async with self._db.session() as session:
            thread = await thread_row(session, project_id, thread_id)
            if request.tool_resources is not None:
                resources = await tool_resources_to_store(
                    session, project_id, request.tool_resources, self._vector_stores
                )
                thread.tool_resources_json = json.dumps(resources)
            if request.metadata is not None:
                thread.metadata_json = json.dumps(check_metadata(request.metadata))
            await session.commit()
        self._vector_stores.wake()
        return thread_to_wire(thread)

    async def delete(self, project_id: str, thread_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            thread = await thread_row(session, project_id, thread_id)
            await rows.delete_thread(session, thread, now())
            await session.commit()
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}

    async def create_message(self, project_id: str, thread_id: str, request: CreateMessageRequest) -> dict[str, Any]:
        async with self._db.session() as session:
            # The thread's lock (PostgreSQL) and the message written before the check (SQLite, whose first write
            # takes the database's write lock) keep a run from being created between the check and the commit:
            # such a run would start on a thread that a message joins after it began.
            await thread_row(session, project_id, thread_id, lock=True)
            (message,) = await add_messages(session, project_id, thread_id, [request], "", self._vector_stores)
            await refuse_while_running(
                session, thread_id, "Can't add messages to {thread} while a run {run} is active."
            )
            await session.commit()
        self._vector_stores.wake()
        return message_to_wire(message)

    async def list_messages(
        self, project_id: str, thread_id: str, page: PageRequest, run_id: str | None
    ) -> Page[dict[str, Any]]:
        async with self._db.session() as session:
            await thread_row(session, project_id, thread_id)
            found = await rows.list_messages(session, thread_id, page, run_id)
        return Page(items=[message_to_wire(row) for row in found.items], has_more=found.has_more)

    async def retrieve_message(self, project_id: str, thread_id: str, message_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            await thread_row(session, project_id, thread_id)
            return message_to_wire(await _message_row(session, thread_id, message_id))

    async def modify_message(
        self, project_id: str, thread_id: str, message_id: str, request: ModifyMessageRequest
    ) -> dict[str, Any]:
        async with self._db.session() as session:
            await thread_row(session, project_id, thread_id)
            message = await _message_row(session, thread_id, message_id)
            if request.metadata is not None:
                message.metadata_json = json.dumps(check_metadata(request.metadata))
            await session.commit()
            return message_to_wire(message)

    async def delete_message(self, project_id: str, thread_id: str, message_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            await thread_row(session, project_id, thread_id)
            message = await _message_row(session, thread_id, message_id)
            message.deleted_at = now()
            await session.commit()
        return {"id": message_id, "object": "thread.message.deleted", "deleted": True}


async def thread_row(session: Session, project_id: str, thread_id: str, lock: bool = False) -> Thread:
    """The live thread, else a 404; `lock` holds its row until the transaction ends (PostgreSQL), so that writes
    that must see each other's outcome (a run starting, a message joining) take turns."""
    thread = await rows.get_thread(session, project_id, thread_id, for_update=lock)
    if thread is None:
        raise not_found(f"No thread found with id '{thread_id}'.", param="thread_id")
    return thread


async def refuse_while_running(session: Session, thread_id: str, message: str) -> None:
    """A 400 with `message` (which may name {thread} and {run}) when the thread has a live run."""
    live = await run_rows.active_run(session, thread_id)
    if live is not None:
        raise invalid_request(message.format(thread=thread_id, run=live.id), param="thread_id", code="run_active")


async def _message_row(session: Session, thread_id: str, message_id: str) -> ThreadMessage:
    message = await rows.get_message(session, thread_id, message_id)
    if message is None:
        raise not_found(f"No message found with id '{message_id}'.", param="message_id")
    return message
