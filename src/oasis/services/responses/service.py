"""The Responses API (after the 2.0.0 spec: `client.responses`): a response is a chat answer to the input items,
the instructions and, with `previous_response_id`, the conversation of an earlier stored response; it is stored
(`store`, on unless turned off) for `retrieve`, `delete`, `input_items.list` and later responses. Whole or
streamed as the API's typed events."""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from oasis.errors import OasisError, invalid_request, not_found
from oasis.protocol.extensions import ChatCompletionRequest
from oasis.protocol.responses import CreateResponseRequest
from oasis.services.chat.generation import close_chunks
from oasis.services.chat.service import ChatService, PreparedChat
from oasis.services.metadata import check_metadata
from oasis.services.responses.items import (
    call_item,
    chat_messages,
    chat_tool_choice,
    chat_tools,
    custom_call_item,
    listed_items,
    message_item,
    output_items,
    reasoning_item,
    text_part,
)
from oasis.storage import responses as rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database, Session
from oasis.storage.pagination import Page, PageRequest, page_of
from oasis.storage.tables import StoredResponse

log = logging.getLogger("oasis.responses")

# Makes a model name servable for a project where it is one of its fine-tunes (loaded on first use).
ModelLoader = Callable[[str, str], Awaitable[None]]

# Fields of the Responses API that this server cannot follow yet, and what to send instead.
_NOT_SUPPORTED = {
    "conversation": "continue a stored response with previous_response_id.",
    "prompt": "send the prompt's text as instructions and input.",
}

# Why an answer stopped short, as a response's `incomplete_details` says it.
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


@dataclass
class PlannedResponse:
    """A request read and checked: the chat request that answers it and what its stored response keeps."""

    id: str
    created_at: int
    project_id: str
    request: CreateResponseRequest
    chat: ChatCompletionRequest
    prepared: PreparedChat | None  # the chat request rendered for its local model (None: an upstream's)
    turn: list[dict[str, Any]]  # this response's input as chat messages (its answer joins them when stored)
    metadata: dict[str, str]

    @property
    def stored(self) -> bool:
        return self.request.store is not False


def _response_format(request: CreateResponseRequest) -> dict[str, Any] | None:
    text_format = request.text.format if request.text else None
    if text_format is None or text_format.type == "text":
        return None
    if text_format.type == "json_object":
        return {"type": "json_object"}
    if text_format.name is None:
        raise invalid_request("A json_schema format needs `name`.", param="text.format.name")
    schema = {"name": text_format.name, "schema": text_format.schema_, "strict": text_format.strict}
    if text_format.description is not None:
        schema["description"] = text_format.description
    return {"type": "json_schema", "json_schema": schema}


def _usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if chat_usage is None:
        return None
    prompt_details = chat_usage.get("prompt_tokens_details") or {}
    completion_details = chat_usage.get("completion_tokens_details") or {}
    prompt, completion = chat_usage.get("prompt_tokens") or 0, chat_usage.get("completion_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": prompt_details.get("cached_tokens") or 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": completion_details.get("reasoning_tokens") or 0},
        "total_tokens": chat_usage.get("total_tokens") or prompt + completion,
    }


def _answer_message(output: list[dict[str, Any]]) -> dict[str, Any]:
    """The output items as the assistant message a later response's conversation holds."""
    text = "".join(
        part["text"] for item in output if item["type"] == "message" for part in item["content"] if "text" in part
    )
    calls = [
        {"id": item["call_id"], "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
        if item["type"] == "function_call"
        else {"id": item["call_id"], "type": "custom", "custom": {"name": item["name"], "input": item["input"]}}
        for item in output
        if item["type"] in ("function_call", "custom_tool_call")
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    return message


class ResponseService:
    def __init__(self, db: Database, chat: ChatService, load_model: ModelLoader) -> None:
        self._db = db
        self._chat = chat
        self._load_model = load_model

    async def plan(self, project_id: str, request: CreateResponseRequest) -> PlannedResponse:
        """Reads the request into a chat request (its files read for a local model), refusing what cannot be
        answered before anything is generated."""
        if request.background:
            raise invalid_request("Background responses are not supported here.", param="background")
        for name in _NOT_SUPPORTED:  # accepted quietly, they would lose the context or instructions they name
            if (request.model_extra or {}).get(name) is not None:
                raise invalid_request(f"'{name}' is not supported here yet: {_NOT_SUPPORTED[name]}", param=name)
        if request.input is None and request.previous_response_id is None:
            raise invalid_request("A response needs `input`.", param="input")
        metadata = check_metadata(request.metadata)
        earlier: list[dict[str, Any]] = []
        if request.previous_response_id is not None:
            async with self._db.session() as session:
                previous = await rows.get_response(session, project_id, request.previous_response_id)
                if previous is None:
                    raise not_found(
                        f"Previous response with id '{request.previous_response_id}' not found.",
                        param="previous_response_id",
                    )
                turns = await rows.chain(session, previous)
            earlier = [message for row in turns for message in json.loads(row.conversation_json)]
        if isinstance(request.input, str):
            turn = [{"role": "user", "content": request.input}]
        else:
            turn = chat_messages(request.input or [])
        conversation = [*earlier, *turn]
        if not conversation:
            raise invalid_request("A response needs at least one input item.", param="input")
        instructions = [{"role": "system", "content": request.instructions}] if request.instructions else []
        body: dict[str, Any] = {"model": request.model, "messages": [*instructions, *conversation]}
        optional = {
            "max_completion_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "tools": chat_tools(request.tools),
            "tool_choice": chat_tool_choice(request.tool_choice),
            "parallel_tool_calls": request.parallel_tool_calls,
            "response_format": _response_format(request),
            "reasoning_effort": request.reasoning.effort if request.reasoning else None,
            "user": request.user,
            "stream": request.stream,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        if not body.get("tools"):  # chat refuses these without tools (a response with none has nothing to choose)
            body.pop("tool_choice", None)
            body.pop("parallel_tool_calls", None)
        try:
            chat = ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            raise invalid_request(f"{error['msg']} ({where} of the chat request this response makes)") from None
        await self._load_model(project_id, request.model)
        chat = await self._chat.with_files_read(chat, project_id)
        prepared = await self._chat.prepared(chat)  # off the event loop when the conversation is long
        return PlannedResponse(new_id("resp_"), int(time.time()), project_id, request, chat, prepared, turn, metadata)

    def _response(
        self,
        plan: PlannedResponse,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        finish: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        request = plan.request
        reason = _INCOMPLETE.get(finish or "")
        text = request.text.model_dump(by_alias=True, exclude_none=True) if request.text else {}
        text.setdefault("format", {"type": "text"})
        return {
            "id": plan.id,
            "object": "response",
            "created_at": plan.created_at,
            "status": "incomplete" if reason and status == "completed" else status,
            "completed_at": int(time.time()) if status == "completed" and not reason else None,
            "background": False,
            "error": error,
            "incomplete_details": {"reason": reason} if reason else None,
            "instructions": request.instructions,
            "max_output_tokens": request.max_output_tokens,
            "model": request.model,
            "output": output,
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "reasoning": {
                "effort": request.reasoning.effort if request.reasoning else None,
                "summary": request.reasoning.summary if request.reasoning else None,
            },
            "store": plan.stored,
            "temperature": 1.0 if request.temperature is None else request.temperature,
            "text": text,
            "tool_choice": request.tool_choice or "auto",
            "tools": request.tools or [],
            "top_p": 1.0 if request.top_p is None else request.top_p,
            "truncation": request.truncation or "disabled",
            "usage": usage,
            "user": request.user,
            "metadata": plan.metadata,
        }

    async def create(self, plan: PlannedResponse) -> dict[str, Any]:
        completion = await self._chat.create(plan.chat, plan.prepared, plan.project_id)
        choice = completion["choices"][0]
        finish = choice["finish_reason"]
        output = output_items(choice["message"], finished=finish not in _INCOMPLETE)
        response = self._response(plan, "completed", output, _usage(completion.get("usage")), finish)
        await self._keep(plan, response)
        return response

    async def stream(self, plan: PlannedResponse) -> AsyncIterator[dict[str, Any]]:
        """Starts the answer and waits for its first chunk (so that a refusal, an upstream's too, still gets its
        HTTP status), then returns its events."""
        chunks = self._chat.stream(plan.chat.with_usage_reported(), plan.prepared, project_id=plan.project_id)
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await close_chunks(chunks)
            raise
        return self._events(plan, first, chunks)

    async def _events(
        self, plan: PlannedResponse, first: dict[str, Any] | None, chunks: AsyncIterator[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        numbers = itertools.count()

        def event(kind: str, **fields: Any) -> dict[str, Any]:
            return {"type": kind, "sequence_number": next(numbers), **fields}

        # All inside the try: a client gone at any event frees the answer's sequences.
        try:
            started = self._response(plan, "in_progress", [], None)
            yield event("response.created", response=started)
            yield event("response.in_progress", response=started)
            writer = _OutputWriter(event)
            usage, finish = None, None
            try:
                async for chunk in _with_first(first, chunks):
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        for made in writer.take(choice.get("delta") or {}):
                            yield made
                        finish = choice.get("finish_reason") or finish
            except OasisError as exc:
                # OpenAI's error event (its fields at the top, and under `error` where clients read them), then the
                # response failed
                error = {"code": exc.code or exc.type, "message": exc.message, "param": exc.param}
                yield event("error", **error, error={**error, "type": exc.type})
                failed = self._response(plan, "failed", writer.output, _usage(usage), error=error)
                yield event("response.failed", response=failed)
                return
            for made in writer.close(finished=finish not in _INCOMPLETE):
                yield made
            response = self._response(plan, "completed", writer.output, _usage(usage), finish)
            await self._keep(plan, response)
            done = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
            yield event(done, response=response)
        finally:
            await close_chunks(chunks)

    async def _keep(self, plan: PlannedResponse, response: dict[str, Any]) -> None:
        """Stores the response unless asked not to; one that cannot be stored is still the client's (logged)."""
        if not plan.stored:
            return
        row = StoredResponse(
            id=plan.id,
            project_id=plan.project_id,
            created_at=plan.created_at,
            previous_response_id=plan.request.previous_response_id,
            response_json=json.dumps(response),
            input_items_json=json.dumps(listed_items(plan.request.input)),
            conversation_json=json.dumps([*plan.turn, _answer_message(response["output"])]),
        )
        try:
            async with self._db.session() as session:
                session.add(row)
                await session.commit()
        except Exception:
            log.exception("response %s could not be stored", plan.id)

    async def retrieve(self, project_id: str, response_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            row = await self._row(session, project_id, response_id)
        return dict(json.loads(row.response_json))

    async def delete(self, project_id: str, response_id: str) -> dict[str, Any]:
        """Forgets the response; a later response can no longer continue it."""
        async with self._db.session() as session:
            row = await self._row(session, project_id, response_id)
            row.deleted_at = now()
            row.response_json, row.input_items_json, row.conversation_json = "{}", "[]", "[]"
            await session.commit()
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(self, project_id: str, response_id: str, page: PageRequest) -> Page[dict[str, Any]]:
        async with self._db.session() as session:
            row = await self._row(session, project_id, response_id)
        return page_of(json.loads(row.input_items_json), page)

    @staticmethod
    async def _row(session: Session, project_id: str, response_id: str) -> StoredResponse:
        row = await rows.get_response(session, project_id, response_id)
        if row is None:
            raise not_found(f"Response with id '{response_id}' not found.", param="response_id")
        return row


async def _with_first(
    first: dict[str, Any] | None, rest: AsyncIterator[dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    if first is not None:
        yield first
    async for chunk in rest:
        yield chunk


class _OutputWriter:
    """A streamed answer's chat deltas as the output items' events: an item opens when its first delta comes and
    is done when another item opens (or the answer ends). Calls are told apart by their `index` (or a new id)."""

    def __init__(self, event: Callable[..., dict[str, Any]]) -> None:
        self._event = event
        self.output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._call_index: int | None = None  # the open call's, as the deltas number it
        self._text = ""

    def take(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        made: list[dict[str, Any]] = []
        if delta.get("reasoning_content"):
            made += self._opened("reasoning")
            self._text += delta["reasoning_content"]
            made.append(self._piece("response.reasoning_text.delta", delta["reasoning_content"], content_index=0))
        if delta.get("content"):
            made += self._opened("message")
            self._text += delta["content"]
            made.append(self._piece("response.output_text.delta", delta["content"], content_index=0, logprobs=[]))
        for call in delta.get("tool_calls") or []:
            custom = call.get("type") == "custom" or "custom" in call
            body = (call.get("custom") if custom else call.get("function")) or {}
            index = call.get("index", self._call_index)
            calls = ("function_call", "custom_tool_call")
            opened = self._open if self._open is not None and self._open["type"] in calls else None
            if opened is None or index != self._call_index or (call.get("id") and call["id"] != opened["call_id"]):
                made += self._closed(finished=True)
                call_id, name = call.get("id") or new_id("call_"), body.get("name") or ""
                if custom:
                    made += self._added(custom_call_item(new_id("ctc_"), call_id, name, "", "in_progress"))
                else:
                    made += self._added(call_item(new_id("fc_"), call_id, name, "", "in_progress"))
                self._call_index = index
            assert self._open is not None
            piece = body.get("input" if self._open["type"] == "custom_tool_call" else "arguments")
            if piece:
                self._text += piece
                kind = (
                    "custom_tool_call_input" if self._open["type"] == "custom_tool_call" else "function_call_arguments"
                )
                made.append(self._piece(f"response.{kind}.delta", piece))
        return made

    def close(self, finished: bool) -> list[dict[str, Any]]:
        return self._closed(finished)

    def _piece(self, kind: str, text: str, **fields: Any) -> dict[str, Any]:
        assert self._open is not None
        return self._event(kind, item_id=self._open["id"], output_index=len(self.output), delta=text, **fields)

    def _opened(self, kind: str) -> list[dict[str, Any]]:
        if self._open is not None and self._open["type"] == kind:
            return []
        made = self._closed(finished=True)
        if kind == "message":
            item = message_item(new_id("msg_"), None, "in_progress")
            part = text_part("")
        else:
            item = {"id": new_id("rs_"), "type": "reasoning", "summary": [], "content": []}
            part = {"type": "reasoning_text", "text": ""}
        made += self._added(item)
        where = {"item_id": item["id"], "output_index": len(self.output), "content_index": 0}
        made.append(self._event("response.content_part.added", **where, part=part))
        return made

    def _added(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self._open, self._text = item, ""
        return [self._event("response.output_item.added", output_index=len(self.output), item=item)]

    def _closed(self, finished: bool) -> list[dict[str, Any]]:
        item, text = self._open, self._text
        if item is None:
            return []
        status = "completed" if finished else "incomplete"
        where = {"item_id": item["id"], "output_index": len(self.output)}
        made: list[dict[str, Any]] = []
        if item["type"] == "message":
            done = message_item(item["id"], text, status)
            made.append(self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[]))
            made.append(self._event("response.content_part.done", **where, content_index=0, part=text_part(text)))
        elif item["type"] == "reasoning":
            done = reasoning_item(item["id"], text)
            made.append(self._event("response.reasoning_text.done", **where, content_index=0, text=text))
            part = {"type": "reasoning_text", "text": text}
            made.append(self._event("response.content_part.done", **where, content_index=0, part=part))
        elif item["type"] == "custom_tool_call":
            done = custom_call_item(item["id"], item["call_id"], item["name"], text, status)
            made.append(self._event("response.custom_tool_call_input.done", **where, input=text))
        else:
            done = call_item(item["id"], item["call_id"], item["name"], text, status)
            made.append(
                self._event("response.function_call_arguments.done", **where, name=item["name"], arguments=text)
            )
        made.append(self._event("response.output_item.done", output_index=len(self.output), item=done))
        self.output.append(done)
        self._open, self._text, self._call_index = None, "", None
        return made
