"""Stored chat completions (after the 2.0.0 spec): an answer made with `store: true` is kept with its request's
settings and input messages, listed, read, given new metadata and deleted (`client.chat.completions.list`,
`retrieve`, `update`, `delete` and `messages.list`)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio

from oasis.errors import not_found
from oasis.protocol.extensions import ChatCompletionRequest
from oasis.services.chat.assembly import assembled
from oasis.services.chat.generation import close_chunks
from oasis.services.metadata import check_metadata
from oasis.storage import chat_completions as rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database, Session
from oasis.storage.pagination import Page, PageRequest, page_of
from oasis.storage.tables import StoredChatCompletion

log = logging.getLogger("oasis.chat")

# The longest a stream's end (its usage chunk) is waited for once every choice has finished.
_REST_SECONDS = 30.0

# The request's settings a stored completion shows beside its answer, each with OpenAI's value when it was not sent.
_SETTINGS: dict[str, Any] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "seed": None,
    "tools": None,
    "tool_choice": None,
    "response_format": None,
}


def _finished_choices(chunk: dict[str, Any]) -> set[Any]:
    """The choices a chunk gives their finish reason."""
    return {choice.get("index") for choice in chunk.get("choices") or [] if choice.get("finish_reason")}


def _sent(request: ChatCompletionRequest) -> dict[str, Any]:
    return request.sent if request.sent is not None else request.model_dump(mode="json", exclude_unset=True)


def _text_of(parts: list[Any]) -> str | None:
    texts = [part.get("text") for part in parts if isinstance(part, dict) and part.get("type") == "text"]
    return "\n".join(text for text in texts if isinstance(text, str)) if texts else None


def _listed_message(completion_id: str, position: int, message: dict[str, Any]) -> dict[str, Any]:
    """An input message as `messages.list` answers it: content as text, with the parts it was sent as."""
    content = message.get("content")
    listed = {key: value for key, value in message.items() if key != "content"}
    listed["id"] = f"{completion_id}-{position}"
    listed.setdefault("name", None)
    if isinstance(content, list):
        listed["content"] = _text_of(content)
        listed["content_parts"] = content
    else:
        listed["content"] = content
        listed["content_parts"] = None
    return listed


def _metadata(row: StoredChatCompletion) -> dict[str, str]:
    return dict(json.loads(row.metadata_json))


def _to_wire(row: StoredChatCompletion) -> dict[str, Any]:
    return {**json.loads(row.completion_json), "metadata": _metadata(row)}


class StoredCompletions:
    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    def check(request: ChatCompletionRequest) -> None:
        """Refuses bad `metadata` before anything is generated."""
        check_metadata(request.metadata)

    async def kept(
        self,
        project_id: str,
        request: ChatCompletionRequest,
        completion: dict[str, Any],
        request_id: str | None,
        request_key: str | None = None,
    ) -> dict[str, Any]:
        """The answer as its client gets it, stored first when the request asked (`store: true`): under an id of
        this server's, as an upstream's ids may repeat. `request_key`: a request that may be made again (a batch's
        line, after a crash) is stored under an id made from it, its newer answer in place of the older."""
        if not request.store:
            return completion
        if request_key:
            digest = hashlib.sha256(f"{project_id}/{request_key}".encode()).hexdigest()[:24]
            completion = {**completion, "id": f"chatcmpl-{digest}"}
        else:
            completion = {**completion, "id": new_id("chatcmpl-")}
        await self._store(project_id, request, completion, request_id, replace=bool(request_key))
        return completion

    async def kept_streamed(
        self,
        project_id: str,
        request: ChatCompletionRequest,
        chunks: AsyncIterator[dict[str, Any]],
        request_id: str | None,
        usage_asked: bool,
    ) -> AsyncIterator[dict[str, Any]]:
        """The chunks as they come, under the stored id, and the answer stored: once every choice has its finish
        reason, the rest of the stream (its usage) is read first, for up to _REST_SECONDS (past them the answer is
        stored without it), and the answer stored before the finish goes out. `chunks` report usage (the stored
        answer has it); the client sees it only where it asked (`usage_asked`)."""
        stored_id = new_id("chatcmpl-")
        seen: list[dict[str, Any]] = []
        finished: set[Any] = set()  # the choices that have had their finish reason
        drained = False  # the stream read to its end once the answer was whole (and the answer stored then)
        try:
            async for chunk in chunks:
                batch = [{**chunk, "id": stored_id}]
                seen += batch
                finished.update(_finished_choices(chunk))
                failure: Exception | None = None
                if not drained and len(finished) >= (request.n or 1):
                    # The answer is whole: what follows (the usage chunk) is read, and the answer stored, before the
                    # finish reason goes out, shielded, so that a client that stops reading at the finish reason
                    # (and leaves, cancelling this stream) has its answer stored with its usage.
                    with anyio.CancelScope(shield=True):
                        try:
                            with anyio.move_on_after(_REST_SECONDS):
                                async for later in chunks:
                                    batch.append({**later, "id": stored_id})
                                    seen.append(batch[-1])
                        except Exception as exc:  # the client hears the finish, then the failure; nothing stored
                            failure = exc
                        else:
                            await self._store(project_id, request, assembled(seen), request_id)
                        drained = True
                for each in batch:
                    if usage_asked:
                        yield each
                    elif each.get("usage") is None or each.get("choices") or "moderation" in each:
                        yield {key: value for key, value in each.items() if key != "usage"}
                    # else: the usage chunk the client did not ask for
                if failure is not None:
                    raise failure
        finally:
            await close_chunks(chunks)  # a client gone before the end stops the generation (nothing is stored)
        if seen and not drained:
            await self._store(project_id, request, assembled(seen), request_id)

    async def _store(
        self,
        project_id: str,
        request: ChatCompletionRequest,
        completion: dict[str, Any],
        request_id: str | None,
        replace: bool = False,
    ) -> None:
        """Stores an answer (`replace`: in place of one stored under its id); one that cannot be stored is still
        the client's (the failure is logged)."""
        sent = _sent(request)
        settings = {name: sent.get(name, default) for name, default in _SETTINGS.items()}
        kept = {
            **completion,
            **settings,
            "request_id": request_id,
            "input_user": sent.get("user"),
            "service_tier": completion.get("service_tier") or "default",
        }
        messages = [
            _listed_message(completion["id"], position, message)
            for position, message in enumerate(sent.get("messages") or [])
            if isinstance(message, dict)
        ]
        row = StoredChatCompletion(
            id=completion["id"],
            project_id=project_id,
            created_at=int(completion.get("created") or now()),
            model=str(completion.get("model") or request.model)[:200],
            completion_json=json.dumps(kept),
            messages_json=json.dumps(messages),
            metadata_json=json.dumps(check_metadata(request.metadata)),
        )
        try:
            async with self._db.session() as session:
                earlier = await rows.stored_under(session, row.id) if replace else None
                if earlier is not None:
                    if earlier.deleted_at is not None:
                        return  # deleted since: not stored again
                    for name in ("created_at", "model", "completion_json", "messages_json", "metadata_json"):
                        setattr(earlier, name, getattr(row, name))
                    row = earlier
                else:
                    session.add(row)
                await session.flush()  # its seq, for the metadata pairs
                await rows.set_tags(session, row.seq, _metadata(row))
                await session.commit()
        except Exception:
            log.exception("chat completion %s could not be stored", completion["id"])

    async def retrieve(self, project_id: str, completion_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            return _to_wire(await self._row(session, project_id, completion_id))

    async def list_completions(
        self, project_id: str, page: PageRequest, model: str | None, metadata: dict[str, str]
    ) -> Page[dict[str, Any]]:
        async with self._db.session() as session:
            found = await rows.list_completions(session, project_id, page, model, metadata)
        return Page(items=[_to_wire(row) for row in found.items], has_more=found.has_more)

    async def update(self, project_id: str, completion_id: str, metadata: dict[str, Any] | None) -> dict[str, Any]:
        """Gives the completion new metadata (the only change OpenAI allows); null clears it."""
        checked = check_metadata(metadata)
        async with self._db.session() as session:
            row = await self._row(session, project_id, completion_id)
            row.metadata_json = json.dumps(checked)
            await rows.set_tags(session, row.seq, checked)
            await session.commit()
        return _to_wire(row)

    async def delete(self, project_id: str, completion_id: str) -> dict[str, Any]:
        """Forgets the answer and its messages; the row stays as a tombstone that a client's cursor can name."""
        async with self._db.session() as session:
            row = await self._row(session, project_id, completion_id)
            row.deleted_at = now()
            row.completion_json, row.messages_json, row.metadata_json = "{}", "[]", "{}"
            await rows.set_tags(session, row.seq, {})
            await session.commit()
        return {"object": "chat.completion.deleted", "id": completion_id, "deleted": True}

    async def messages(self, project_id: str, completion_id: str, page: PageRequest) -> Page[dict[str, Any]]:
        """The completion's input messages, paged by their ids (`<completion id>-<position>`)."""
        async with self._db.session() as session:
            row = await self._row(session, project_id, completion_id)
        return page_of(json.loads(row.messages_json), page)

    @staticmethod
    async def _row(session: Session, project_id: str, completion_id: str) -> StoredChatCompletion:
        row = await rows.get_completion(session, project_id, completion_id)
        if row is None:
            raise not_found(f"No chat completion found with id '{completion_id}'.", param="completion_id")
        return row
