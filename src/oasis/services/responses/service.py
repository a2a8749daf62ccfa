"""The Responses API (after the 2.0.0 spec: `client.responses`): a response is a chat answer to the input items,
the instructions and, with `previous_response_id`, the conversation of an earlier stored response; it is stored
(`store`, on unless turned off) for `retrieve`, `delete`, `input_items.list` and later responses. Whole or
streamed as the API's typed events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from oasis.errors import OasisError, invalid_request, not_found
from oasis.protocol.extensions import ChatCompletionRequest
from oasis.protocol.responses import CreateResponseRequest
from oasis.services.assistants import file_search as search_function
from oasis.services.assistants.citations import Citer
from oasis.services.assistants.code_interpreter import CodeInterpreter
from oasis.services.assistants.file_search import FileSearch
from oasis.services.chat.generation import close_chunks
from oasis.services.chat.service import ChatService, PreparedChat
from oasis.services.containers import ContainerService
from oasis.services.files.service import FileService
from oasis.services.images.service import Drawn, ImageService, PartialImages
from oasis.services.keys import Principal
from oasis.services.metadata import check_metadata
from oasis.services.rate_limits import CHAT_COMPLETIONS, RateLimiter, estimate_prompt_tokens, estimate_tokens
from oasis.services.responses import background, code_interpreter, compaction, file_search, image_generation
from oasis.services.responses import mcp as mcp_tools
from oasis.services.responses.conversations import ConversationService, conversation_id_of
from oasis.services.responses.items import (
    FILE_IMAGE,
    INCLUDE_LOGPROBS,
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
    user_message_items,
)
from oasis.services.responses.mcp_client import McpError, McpSession
from oasis.services.responses.prompts import Prompts, RenderedPrompt
from oasis.storage import responses as rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database, Session
from oasis.storage.pagination import Page, PageRequest, page_of
from oasis.storage.tables import StoredResponse

log = logging.getLogger("oasis.responses")

# Makes a model name servable for a project where it is one of its fine-tunes (loaded on first use).
ModelLoader = Callable[[str, str], Awaitable[None]]

# Of the context, the room `truncation: auto` leaves for the answer when `max_output_tokens` does not say.
REPLY_ROOM = 512

# The context assumed for an upstream's model, whose own is not known here, when sizing search results.
DEFAULT_CONTEXT = 4096

# The largest image file an `input_image` may name by `file_id` (OpenAI's limit for an image input), and the most
# that a response's images read from files may hold in all (OpenAI's limit for a request's images).
MAX_IMAGE_BYTES = 20 << 20
MAX_IMAGES_BYTES = 50 << 20

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
    search: file_search.SearchTool | None = None
    code: code_interpreter.CodeTool | None = None
    image: image_generation.ImageTool | None = None
    mcp: mcp_tools.McpTools | None = None
    # Calls the client answered `mcp_approval_response` for: each approval request, and whether it was approved.
    approvals: list[tuple[dict[str, Any], bool]] = field(default_factory=list)
    question: str = ""  # the newest user message's text: a search looks for it too
    conversation_id: str | None = None  # the conversation it reads and adds its items to
    input_items: list[dict[str, Any]] = field(default_factory=list)  # its input as listed, each with its id
    # The conversation it answers (earlier turns, then its input) as chat messages, before files are read or turns
    # truncated away.
    conversation: list[dict[str, Any]] = field(default_factory=list)
    instruction_count: int = 0  # of the chat messages, those of the instructions (first)
    turn_start: int = 0  # of the chat messages after the instructions, where this response's input starts
    # The checkpoint a background response's dead generation left (`_checkpoint`): this generation resumes there.
    resumed: dict[str, Any] | None = None
    # The rendered prompt reached `context_management`'s threshold: the conversation is compacted first (`chat` is
    # the whole conversation until then, and `prepared` None).
    compaction_due: bool = False
    # Once compacted: the compaction item, which the output begins with, and the summary's chat usage.
    compaction: dict[str, Any] | None = None
    compaction_usage: dict[str, Any] | None = None
    prompt: RenderedPrompt | None = None  # the configured prompt the request names, its variables in place

    @property
    def shows_results(self) -> bool:
        return file_search.INCLUDE_RESULTS in (self.request.include or [])

    @property
    def shows_outputs(self) -> bool:
        return code_interpreter.INCLUDE_OUTPUTS in (self.request.include or [])

    @property
    def stored(self) -> bool:
        return self.request.store is not False

    @property
    def runs_tools(self) -> bool:
        """Whether the server runs tools the model may call (built-in ones) between generations."""
        return self.search is not None or self.code is not None or self.image is not None or self.mcp is not None


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


def _wants_logprobs(request: CreateResponseRequest) -> bool:
    """Whether the answer's text comes with its tokens' logprobs: `include` asks, or `top_logprobs` is given."""
    return INCLUDE_LOGPROBS in (request.include or []) or bool(request.top_logprobs)


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


def _answer_messages(
    output: list[dict[str, Any]],
    tool_texts: dict[str, str],
    starts: Sequence[int] = (0,),
    compactions: bool = False,
) -> list[dict[str, Any]]:
    """The output items as the messages a later generation reads: each generation's assistant message (its text
    and its calls; `starts`: where each generation's items begin), followed by what its built-in calls gave
    (`tool_texts`, by the call's item id). `compactions`: a compaction item (server-side, made before the model
    answered) is read as its summary, as a later response reads it; otherwise skipped (this response's own
    generations read it already)."""
    messages: list[dict[str, Any]] = []
    given: list[dict[str, Any]] = []  # the latest generation's built-in calls' outputs, not yet placed
    fresh = False  # a later generation begins: its items go in a message of its own
    for index, item in enumerate(output):
        kind = item["type"]
        if index in starts and index > 0:
            messages.extend(given)
            given, fresh = [], True
        if kind == "reasoning" or kind in _NOT_SAID:
            continue  # not shown to the model again (a call waiting for approval is made once approved)
        if kind == compaction.TOOL_TYPE:
            if compactions:
                messages.append(compaction.message(item, "output"))
            continue
        if fresh or not messages or messages[-1]["role"] != "assistant":
            messages.append({"role": "assistant", "content": None})
            fresh = False
        current = messages[-1]
        if kind == "message":
            text = "".join(part.get("text", "") for part in item["content"])
            current["content"] = (current["content"] or "") + text or None
        elif kind == "function_call":
            call = {"name": item["name"], "arguments": item["arguments"]}
            current.setdefault("tool_calls", []).append({"id": item["call_id"], "type": "function", "function": call})
        elif kind == "custom_tool_call":
            custom = {"name": item["name"], "input": item["input"]}
            current.setdefault("tool_calls", []).append({"id": item["call_id"], "type": "custom", "custom": custom})
        elif kind == "file_search_call":
            current.setdefault("tool_calls", []).append(file_search.tool_call(item))
            text = tool_texts.get(item["id"]) or file_search.results_for_model([], 0)
            given.append({"role": "tool", "tool_call_id": item["id"], "content": text})
        elif kind == "code_interpreter_call":
            current.setdefault("tool_calls", []).append(code_interpreter.tool_call(item))
            text = tool_texts.get(item["id"]) or code_interpreter.sent_back_text(item.get("outputs") or [])
            given.append({"role": "tool", "tool_call_id": item["id"], "content": text})
        elif kind == "image_generation_call":
            current.setdefault("tool_calls", []).append(image_generation.tool_call(item))
            text = tool_texts.get(item["id"]) or image_generation.sent_back_text(item)
            given.append({"role": "tool", "tool_call_id": item["id"], "content": text})
        elif kind == "mcp_call":
            current.setdefault("tool_calls", []).append(mcp_tools.tool_call(item))
            text = tool_texts.get(item["id"]) or mcp_tools.result_text(item)
            given.append({"role": "tool", "tool_call_id": item["id"], "content": text})
    messages.extend(given)
    if not messages and output and all(item["type"] in (*_NOT_SAID, compaction.TOOL_TYPE) for item in output):
        return []  # a compaction, a listing and calls waiting for approval: the model said nothing yet
    return messages or [{"role": "assistant", "content": None}]


def _stored_items(turns: list[StoredResponse]) -> Iterator[list[Any]]:
    """The input and output items of the responses a response continues, the newest first, each read when asked
    for."""
    for row in reversed(turns):
        yield json.loads(row.input_items_json)
        yield json.loads(row.response_json).get("output") or []


def _newest_image_bytes(newest: tuple[str, str] | None) -> bytes | None:
    """The bytes of the image `image_generation.newest_image` found (None: none); a 400 naming the input for one
    that cannot be read (a URL this server would have to fetch, a sent-back `result` that is not base64)."""
    if newest is None:
        return None
    kind, value = newest
    if kind == "drawn":
        try:
            return base64.b64decode(value, validate=True)
        except ValueError:
            raise invalid_request(
                "The newest image in the conversation, an image_generation_call's `result`, is not base64.",
                param="input",
            ) from None
    return image_generation.image_bytes(value, "input", "The newest image in the conversation")


def _instructions(plan: PlannedResponse) -> str | list[dict[str, Any]] | None:
    """A response's `instructions`: the request's, or, where it names a prompt, the prompt's messages as input items
    (OpenAI's answer), the request's own instructions after them."""
    if plan.prompt is None:
        return plan.request.instructions
    own = [{"type": "message", "role": "developer", "content": plan.request.instructions}]
    items, lead = plan.prompt.items, plan.prompt.leading
    return [*items[:lead], *(own if plan.request.instructions else []), *items[lead:]] or None


# Output items that are no part of what the model said (a calls' approval is asked for, not yet made).
_NOT_SAID = ("mcp_list_tools", "mcp_approval_request")


def _joined_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with an assistant message that only calls tools joined to the assistant message before it (what
    it said before the calls were approved), for chat templates whose roles must alternate."""
    joined: list[dict[str, Any]] = []
    for message in messages:
        last = joined[-1] if joined else None
        if (
            last is not None
            and last.get("role") == "assistant"
            and message.get("role") == "assistant"
            and not last.get("tool_calls")
            and message.get("tool_calls")
            and not message.get("content")
        ):
            joined[-1] = {**last, "tool_calls": message["tool_calls"]}
            continue
        joined.append(message)
    return joined


def _whole(item: dict[str, Any], made: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """A built-in call's item with what it made (a search's results, a run's outputs), shown or not."""
    if item["id"] not in made:
        return item
    key = "results" if item["type"] == "file_search_call" else "outputs"
    return {**item, key: made[item["id"]]}


def _function_name(tool: dict[str, Any]) -> str | None:
    return (tool.get("function") or {}).get("name") if tool.get("type") == "function" else None


def _is_approval(item: Any) -> bool:
    return isinstance(item, dict) and item.get("type") == "mcp_approval_response"


def _mcp_choice(choice: Any, remote: mcp_tools.McpTools | None) -> Any:
    """`tool_choice: {"type": "mcp", "server_label", "name"}` as the function it names (without a name: some tool
    must be called)."""
    if not (isinstance(choice, dict) and choice.get("type") == mcp_tools.TOOL_TYPE):
        return choice
    name = choice.get("name")
    if remote is None or not any(server.label == choice.get("server_label") for server in remote.servers):
        raise invalid_request("`tool_choice` names an mcp server that `tools` does not offer.", param="tool_choice")
    if name is None:
        return "required"
    if name not in remote.by_name:
        raise invalid_request(
            f"`tool_choice` names tool '{name}', which the mcp server does not offer.", param="tool_choice"
        )
    return {"type": "function", "name": name}


async def _no_chunks() -> AsyncIterator[dict[str, Any]]:
    return
    yield


def _is_reference(item: Any) -> bool:
    """An `item_reference` (its `type` may be left out: an item with an id and nothing else)."""
    if not isinstance(item, dict):
        return False
    if item.get("type") == "item_reference":
        return True
    return "type" not in item and "id" in item and not ({"role", "content"} & item.keys())


def _image_file_url(part: Any) -> str | None:
    """The file id of a chat image part that names a file (items.FILE_IMAGE), else None."""
    if not isinstance(part, dict) or part.get("type") != "image_url":
        return None
    url = (part.get("image_url") or {}).get("url")
    return url.removeprefix(FILE_IMAGE) if isinstance(url, str) and url.startswith(FILE_IMAGE) else None


def _image_file_places(request_input: Any) -> dict[str, str]:
    """The input's images given by file id, each with where the request has it (for errors)."""
    places: dict[str, str] = {}
    for index, item in enumerate(request_input if isinstance(request_input, list) else []):
        content = item.get("content") if isinstance(item, dict) else None
        for number, part in enumerate(content if isinstance(content, list) else []):
            if isinstance(part, dict) and part.get("type") == "input_image" and isinstance(part.get("file_id"), str):
                places.setdefault(part["file_id"], f"input[{index}].content[{number}].file_id")
    return places


def _image_type(data: bytes) -> str | None:
    """The image's media type, read from its first bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _last_user_text(conversation: list[dict[str, Any]]) -> str:
    for message in reversed(conversation):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(part["text"] for part in content or [] if part.get("type") == "text")
    return ""


def _summed(total: dict[str, Any] | None, more: dict[str, Any] | None) -> dict[str, Any] | None:
    """Two generations' chat usage as one."""
    if total is None or more is None:
        return more if total is None else total
    summed = {key: (total.get(key) or 0) + (more.get(key) or 0) for key in _USAGE_COUNTS}
    for details, keys in _USAGE_DETAILS.items():
        summed[details] = {
            key: ((total.get(details) or {}).get(key) or 0) + ((more.get(details) or {}).get(key) or 0) for key in keys
        }
    return summed


_USAGE_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens")
_USAGE_DETAILS = {"prompt_tokens_details": ("cached_tokens",), "completion_tokens_details": ("reasoning_tokens",)}


@dataclass
class _Answer:
    """A response's generations so far: the chat stream being read, the usage and finish of those read, and
    what each search showed the model."""

    chunks: AsyncIterator[dict[str, Any]]
    usage: dict[str, Any] | None = None
    finish: str | None = None
    tool_texts: dict[str, str] = field(default_factory=dict)  # what each built-in call showed the model, by item id
    tool_outputs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # a search's results, a run's outputs
    searches: int = 0
    code_runs: int = 0
    images: int = 0
    mcp_calls: int = 0
    denied: list[dict[str, Any]] = field(default_factory=list)  # approval requests the client refused
    starts: list[int] = field(default_factory=list)  # where each generation's output items begin
    # The summary's generation (server-side compaction): in the response's usage, not in `max_output_tokens`.
    compaction_usage: dict[str, Any] | None = None

    @property
    def reported_usage(self) -> dict[str, Any] | None:
        return _usage(_summed(self.usage, self.compaction_usage))


class _EndsResponse(OasisError):
    """An error that ends the response `failed`, even where errors are raised as the request's (`create`)."""


# A built-in call the model made, waiting to run: its function's name, its arguments, and the approval request it
# answers (an MCP call the client approved).
_HeldCall = tuple[str, str, str | None]
# What the model reads of a call that was running when the server generating its response stopped.
_INTERRUPTED = (
    "The call was cut off: the server running it stopped before it finished. It may or may not have taken effect, "
    "and it was not made again."
)


def _checkpoint(
    plan: PlannedResponse,
    writer: _OutputWriter,
    answer: _Answer,
    held: Sequence[_HeldCall],
    started: _HeldCall | None,
    round_names: set[str],
) -> dict[str, Any]:
    """A marker (not an event: no client sees it) of where the generation is between built-in calls: its output
    so far and what it showed the model, the calls still to run and the one about to run (only a call that reaches
    outside is marked started: a crash after the mark cuts it off), and the container its code runs in (an `auto`
    one's id is made as the request is planned). A background response stores it with the events before it, and
    a generation taken over after a crash resumes there (`_restored`)."""
    server = None
    if started is not None and plan.mcp is not None and started[0] in plan.mcp.by_name:
        server = plan.mcp.by_name[started[0]][0].label
    state = {
        "container_id": plan.code.container_id if plan.code is not None else None,
        "output": writer.output,
        "cited": writer.cited,
        "written": writer.written_files,
        "usage": answer.usage,
        "compaction_usage": answer.compaction_usage,
        "tool_texts": answer.tool_texts,
        "tool_outputs": answer.tool_outputs,
        "searches": answer.searches,
        "code_runs": answer.code_runs,
        "images": answer.images,
        "mcp_calls": answer.mcp_calls,
        "denied": answer.denied,
        "starts": answer.starts,
        "held": [list(call) for call in held],
        "started": list(started) if started is not None else None,
        "started_server": server,  # the MCP server the started call went to
        "round": sorted(round_names),
    }
    return {"type": background.CHECKPOINT, "state": state}


# Stores a background response's answer and writes its last event (`response.completed` or `.incomplete`), both
# in one transaction, in place of `_keep`.
Keeper = Callable[[PlannedResponse, dict[str, Any], _Answer, dict[str, Any]], Awaitable[None]]


class ResponseService:
    def __init__(
        self,
        db: Database,
        chat: ChatService,
        load_model: ModelLoader,
        searcher: FileSearch,
        code: CodeInterpreter,
        conversations: ConversationService,
        containers: ContainerService,
        files: FileService,
        images: ImageService,
        wake_workers: Callable[[], None] = lambda: None,
        mcp_server_urls: list[str] | None = None,
        rate_limits: RateLimiter | None = None,
        prompts: Prompts | None = None,
    ) -> None:
        self._db = db
        self._prompts = prompts or Prompts(())
        self._rate_limits = rate_limits  # counts the generations after built-in calls (the request counted the first)
        self._chat = chat
        self._load_model = load_model
        self._searcher = searcher
        self._code = code
        self._conversations = conversations
        self._containers = containers
        self._files = files
        self._images = images
        self._mcp_server_urls = mcp_server_urls  # the URL prefixes the mcp tool may reach (None: any)
        self._wake_workers = wake_workers
        self.bell = background.Bell()  # rung by this process's writes of background responses' events
        # Stops a background response being generated in this process (the worker sets it).
        self.cancel_here: Callable[[str], None] = lambda response_id: None

    async def plan(
        self,
        project_id: str,
        request: CreateResponseRequest,
        response_id: str | None = None,
        created_at: int | None = None,
        compacting: bool = False,
        default_model: Callable[[], str] | None = None,
    ) -> PlannedResponse:
        """Reads the request into a chat request (its files read for a local model), refusing what cannot be
        answered before anything is generated. A background response's worker plans it again under the id and
        creation time it was given when it was queued. `compacting`: the request is a compaction's, whose input is
        the conversation (truncation may drop any turn but the newest user message's, and approvals in it are not
        acted on). `default_model`: the model when neither the request nor its prompt names one."""
        if request.background and request.store is False:
            raise invalid_request("A background response is stored: `store` cannot be false.", param="store")
        prompt = None
        if (given_prompt := (request.model_extra or {}).get("prompt")) is not None:
            prompt = self._prompts.rendered(given_prompt)
            # the version read is kept: a background response's worker reads the same one
            request = request.model_copy(update={"prompt": {**given_prompt, "version": prompt.reference["version"]}})
        if not request.model:
            model = prompt.model if prompt is not None and prompt.model else None
            model = model or (default_model() if default_model is not None else None)
            if not model:
                raise invalid_request("Missing required parameter: 'model'.", param="model")
            request = request.model_copy(update={"model": model})
        if (
            request.input is None
            and request.previous_response_id is None
            and request.conversation is None
            and prompt is None
        ):
            raise invalid_request("A response needs `input`.", param="input")
        metadata = check_metadata(request.metadata)
        compact_at = None if compacting else compaction.threshold(request.model_extra)
        earlier: list[dict[str, Any]] = []
        kept: list[dict[str, Any]] = []  # a conversation's items
        turns: list[StoredResponse] = []  # the responses this one continues
        conversation_id = None
        if request.conversation is not None:
            if request.previous_response_id is not None:
                raise invalid_request(
                    "Give `conversation` or `previous_response_id`, not both.", param="previous_response_id"
                )
            conversation_id = conversation_id_of(request.conversation)
            kept = await self._conversations.items_for_response(project_id, conversation_id)
            earlier = chat_messages(kept, param="conversation.items")
        if request.previous_response_id is not None:
            async with self._db.session() as session:
                previous = await rows.get_response(session, project_id, request.previous_response_id)
                if previous is None:
                    raise not_found(
                        f"Previous response with id '{request.previous_response_id}' not found.",
                        param="previous_response_id",
                    )
                turns = await rows.chain(session, previous)
            if previous.status not in ("completed", "incomplete"):
                unfinished = "is still being generated" if previous.status in ("queued", "in_progress") else None
                raise invalid_request(
                    f"Previous response with id '{previous.id}' "
                    + (unfinished or f"ended {previous.status}")
                    + ": only a finished response can be continued.",
                    param="previous_response_id",
                )
            earlier = [message for row in turns for message in json.loads(row.conversation_json)]
        request_input = await self._referenced(project_id, request.input)
        if isinstance(request_input, str):
            turn = [{"role": "user", "content": request_input}]
        else:
            turn = chat_messages([item for item in request_input or [] if not _is_approval(item)])
        # A server-side compaction's summary stands for all before it: the conversation is read from the newest on.
        read_turn = turn
        if (kept_from := len(earlier) + len(turn) - len(compaction.since_latest([*earlier, *turn]))) > 0:
            earlier, read_turn = earlier[kept_from:], turn[max(0, kept_from - len(earlier)) :]
        conversation = [*earlier, *read_turn]
        if not conversation and not (prompt is not None and prompt.items):  # a prompt's messages may be all it says
            raise invalid_request("A response needs at least one input item.", param="input")
        search = file_search.search_tool(request.tools)
        code = code_interpreter.code_tool(request.tools)
        image = image_generation.image_tool(request.tools)
        servers = mcp_tools.mcp_servers(request.tools, self._mcp_server_urls)
        built_in = (
            search_function.TOOL_NAME,
            code_interpreter.TOOL_TYPE,
            image_generation.TOOL_TYPE,
            mcp_tools.TOOL_TYPE,
        )
        other_tools = [
            tool for tool in request.tools or [] if not (isinstance(tool, dict) and tool.get("type") in built_in)
        ]
        if search is not None:
            await file_search.check_stores(self._db, project_id, search)
        if code is not None:
            code = await self._code_tool(project_id, code)
        tools = chat_tools(other_tools or None)
        if search is not None:
            tools = [*(tools or []), search_function.FUNCTION]
        if code is not None:
            tools = [*(tools or []), code_interpreter.FUNCTION]
        instructions = []
        if prompt is not None:
            prompt_messages = chat_messages(prompt.items, param="prompt")
            instructions = await self._with_image_files(project_id, prompt_messages, 0, prompt.file_places)
        if request.instructions:  # after a prompt's own instructions, before its messages (templates want them first)
            lead = prompt.leading if prompt is not None else 0
            instructions.insert(lead, {"role": "system", "content": request.instructions})
        messages = await self._with_image_files(
            project_id,
            [*instructions, *conversation],
            len(instructions) + len(earlier),
            _image_file_places(request_input),
        )
        if image is not None:
            image = self._checked_image_tool(image)
            if image.action != "generate":
                given = request_input if isinstance(request_input, list) else []
                drawn = image_generation.drawn_images(itertools.chain([given], _stored_items(turns), [kept]))
                image = await self._image_sources(project_id, image, messages, drawn)
            tools = [*(tools or []), image.function]
        remote = (
            await self._listed_mcp_tools(servers, {_function_name(tool) for tool in tools or []}) if servers else None
        )
        if remote is not None:
            tools = [*(tools or []), *remote.functions()]
        approvals = [] if compacting else await self._approvals(project_id, request_input, remote)
        choice = _mcp_choice(request.tool_choice, remote)
        offers = (
            (search_function.TOOL_NAME, search),
            (code_interpreter.TOOL_TYPE, code),
            (image_generation.TOOL_TYPE, image),
        )
        for kind, offered in offers:
            if isinstance(choice, dict) and choice.get("type") == kind and offered is None:
                raise invalid_request(f"`tool_choice` names {kind}, which `tools` does not offer.", param="tool_choice")
        body: dict[str, Any] = {"model": request.model, "messages": messages}
        optional = {
            "max_completion_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "tools": tools,
            "tool_choice": chat_tool_choice(choice),
            "parallel_tool_calls": request.parallel_tool_calls,
            "response_format": _response_format(request),
            "reasoning_effort": request.reasoning.effort if request.reasoning else None,
            "logprobs": True if _wants_logprobs(request) else None,
            "top_logprobs": request.top_logprobs if _wants_logprobs(request) else None,
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
        # Compaction (`context_management`) is due: the summary replaces the conversation before the model answers,
        # so the prompt is neither truncated nor rendered (nor refused as too long) until then.
        compaction_due, prepared = await self._reaches(chat, compact_at) if compact_at is not None else (False, None)
        if request.truncation == "auto" and not compaction_due:
            truncated = await self._truncated(
                chat, len(instructions), len(conversation) if compacting else len(earlier)
            )
            chat, prepared = truncated, prepared if truncated is chat else None
        if not compaction_due and prepared is None:
            prepared = await self._chat.prepared(chat)  # off the event loop when the conversation is long
        return PlannedResponse(
            id=response_id or new_id("resp_"),
            created_at=int(time.time()) if created_at is None else created_at,
            project_id=project_id,
            request=request,
            chat=chat,
            prepared=prepared,
            turn=turn,
            metadata=metadata,
            search=search,
            code=code,
            image=image,
            mcp=remote,
            approvals=approvals,
            question=_last_user_text(conversation),
            conversation_id=conversation_id,
            input_items=listed_items(request_input),
            conversation=conversation,
            instruction_count=len(instructions),
            turn_start=len(conversation) - len(read_turn),
            compaction_due=compaction_due,
            prompt=prompt,
        )

    async def count_input_tokens(
        self, project_id: str, request: CreateResponseRequest, default_model: Callable[[], str] | None = None
    ) -> dict[str, Any]:
        """The tokens a response's input would take in its model's prompt: its instructions, conversation and tools,
        as the response's first generation reads them (its `usage.input_tokens`). Checked as a response is, and
        nothing stored or run; an upstream's model has no count here (a 400). `default_model`: as `plan`'s."""
        asked = request.model_copy(
            update={"stream": None, "background": None, "store": False, "context_management": None}
        )
        plan = await self.plan(project_id, asked, default_model=default_model)
        # a model the plan did not render is an upstream's, or not one served here (then a 404, as chat's)
        prepared = plan.prepared or await asyncio.to_thread(self._chat.prepare_local, plan.chat)
        if prepared is None:
            raise invalid_request(
                f"Model '{plan.request.model}' is served by an upstream engine, whose tokenizer is not here: input "
                "tokens are counted for the models this server runs.",
                param="model",
            )
        return {"object": "response.input_tokens", "input_tokens": len(prepared.prompt)}

    async def compact(self, project_id: str, request: CreateResponseRequest) -> dict[str, Any]:
        """`POST /v1/responses/compact`: the conversation (an earlier response's turns and the input) summarized by
        the model, answered as its user messages and a compaction item carrying the summary (compaction.py). A
        conversation longer than the model's context is summarized from its newest turns that fit. Nothing is
        stored."""
        plan, summary, usage = await self._summarized(project_id, request)
        return {
            "id": new_id("resp_"),
            "object": "response.compaction",
            "created_at": int(time.time()),
            "output": [*user_message_items(plan.conversation), compaction.item(summary)],
            "usage": _usage(usage),
        }

    async def _summarized(
        self, project_id: str, request: CreateResponseRequest, admitted: PlannedResponse | None = None
    ) -> tuple[PlannedResponse, str, dict[str, Any]]:
        """The model's summary of a request's conversation (and the plan that read it, and the summary's chat
        usage). `admitted`: a response compacting before it answers, whose project's token limit the summary counts
        against (the request itself was counted for its answer)."""
        asked = request.model_copy(
            update={
                "stream": None,
                "background": None,
                "store": False,
                "tools": None,
                "tool_choice": None,
                "text": None,
                "truncation": "auto",  # leaves the room the summary takes
                "max_output_tokens": compaction.SUMMARY_TOKENS + compaction.ASKING_TOKENS,
                "context_management": None,
            }
        )
        too_long = OasisError(
            400,
            f"The conversation since its newest user message (with the instructions) leaves no room for a summary in "
            f"{request.model or 'the model'}'s context.",
            param="input",
            code="context_length_exceeded",
        )
        try:
            plan = await self.plan(project_id, asked, compacting=True)
        except OasisError as exc:
            if exc.code != "context_length_exceeded":
                raise
            raise too_long from None
        if len(plan.chat.messages) <= plan.instruction_count:  # all of it cut (a history without a user message)
            raise too_long
        messages = [message.model_dump(mode="json", exclude_none=True) for message in plan.chat.messages]
        body: dict[str, Any] = {
            "model": plan.chat.model,
            "messages": [*messages, {"role": "user", "content": compaction.PROMPT}],
            "max_completion_tokens": compaction.SUMMARY_TOKENS,
        }
        if plan.prepared is not None:  # a local thinking model: the summary, not thoughts, fills the budget
            body["reasoning_effort"] = "none"
        try:
            summarizing = ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:
            raise invalid_request(f"The conversation cannot be summarized: {exc.errors()[0]['msg']}") from None
        if admitted is not None:
            await self._admit(admitted, summarizing, plan.prepared)  # the conversation's prompt, and the summary
        answer = await self._chat.create(summarizing, None, project_id)
        choices = answer.get("choices")
        said = (
            choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        )
        summary = str(said.get("content") or "").strip() if isinstance(said, dict) else ""
        if not summary:
            raise OasisError(
                500,
                f"{plan.chat.model} wrote no summary of the conversation; nothing was compacted.",
                type="server_error",
                code="empty_summary",
            )
        return plan, summary, answer.get("usage") or {}

    async def _compact(self, plan: PlannedResponse) -> None:
        """Server-side compaction, before the model answers, when the plan is due for it: the conversation
        summarized into the compaction item (which stands for everything before it, this response's input too),
        and the plan's chat read from it (`_read_compacted`). Refused before the summary is written when what the
        model must still read whole (from the newest user message on) does not fit a local model's context."""
        if not plan.compaction_due:
            return
        context = self._chat.context_length(plan.chat.model)
        if context is not None:
            unsummarized = self._compacted_chat(plan, compaction.item("", replaces_earlier=True))
            # room for the longest summary too
            answer_room = plan.chat.max_completion_tokens or min(REPLY_ROOM, context // 4)
            with_room = unsummarized.model_copy(
                update={"max_completion_tokens": answer_room + compaction.SUMMARY_TOKENS}
            )
            if (await self._reaches(with_room, 0))[0]:
                raise OasisError(
                    400,
                    f"The conversation from its newest user message on does not fit {plan.chat.model}'s context "
                    f"beside the answer and a summary of the rest (up to {compaction.SUMMARY_TOKENS} tokens).",
                    param="input",
                    code="context_length_exceeded",
                )
        _, summary, usage = await self._summarized(plan.project_id, plan.request, admitted=plan)
        item = compaction.item(summary, replaces_earlier=True)
        await self._read_compacted(plan, item)
        plan.compaction, plan.compaction_usage = item, usage

    def _compacted_chat(self, plan: PlannedResponse, item: dict[str, Any]) -> ChatCompletionRequest:
        """The plan's chat after its compaction `item`: the instructions, the summary, then what the model answers
        (from the conversation's newest user message on)."""
        body = plan.chat.model_dump(mode="json", by_alias=True, exclude_unset=True)
        head, said = body["messages"][: plan.instruction_count], body["messages"][plan.instruction_count :]
        users = [index for index, message in enumerate(said) if message.get("role") == "user"]
        tail = said[users[-1] :] if users else said[plan.turn_start :]
        if tail and compaction.is_summary(tail[0].get("content")):  # an earlier compaction's: the new one holds it
            tail = tail[1:]
        body["messages"] = [*head, compaction.message(item, "output"), *tail]
        return ChatCompletionRequest.model_validate(body)

    async def _read_compacted(self, plan: PlannedResponse, item: dict[str, Any]) -> None:
        """The plan's chat made `_compacted_chat`, truncated and rendered as the request asks."""
        chat = self._compacted_chat(plan, item)
        if plan.request.truncation == "auto":
            chat = await self._truncated(chat, plan.instruction_count, 0)
        plan.chat, plan.prepared = chat, await self._chat.prepared(chat)
        plan.turn_start, plan.compaction_due = 0, False

    async def _reaches(self, chat: ChatCompletionRequest, threshold: int) -> tuple[bool, PreparedChat | None]:
        """Whether the chat's rendered prompt reaches `threshold` tokens (0: would not fit the model's context
        beside the answer's room), and the chat rendered (when it was, and fits). An upstream's model's prompt is
        estimated from its characters, as the rate limits estimate it; its context is not known here."""
        context = self._chat.context_length(chat.model)
        if context is None:
            asked = chat.model_dump(mode="json", exclude_none=True)
            return threshold > 0 and estimate_prompt_tokens(CHAT_COMPLETIONS, asked) >= threshold, None
        try:
            prepared = await self._chat.prepared(chat)
        except OasisError as exc:
            if exc.code == "context_length_exceeded":
                return True, None
            raise
        if prepared is None:
            return False, None
        tokens = len(prepared.prompt)
        if threshold:
            return tokens >= threshold, prepared
        return tokens + (chat.max_completion_tokens or min(REPLY_ROOM, context // 4)) > context, prepared

    async def _referenced(
        self, project_id: str, request_input: str | list[dict[str, Any]] | None
    ) -> str | list[dict[str, Any]] | None:
        """The input with each `item_reference` replaced by the stored item it names (a 404 naming it when the
        project has none)."""
        if not isinstance(request_input, list) or not any(_is_reference(item) for item in request_input):
            return request_input
        resolved: list[dict[str, Any]] = []
        async with self._db.session() as session:
            for index, item in enumerate(request_input):
                if not _is_reference(item):
                    resolved.append(item)
                    continue
                item_id = item.get("id")
                if not isinstance(item_id, str) or not item_id:
                    raise invalid_request(
                        "An item_reference needs the `id` of a stored item.", param=f"input[{index}].id"
                    )
                found = await rows.stored_item(session, project_id, item_id)
                if found is None or found.get("type") == "item_reference":
                    raise not_found(f"Item with id '{item_id}' not found.", param=f"input[{index}].id")
                resolved.append(found)
        return resolved

    async def _with_image_files(
        self, project_id: str, messages: list[dict[str, Any]], first_new: int, places: dict[str, str]
    ) -> list[dict[str, Any]]:
        """The messages with each image given by `file_id` (items.FILE_IMAGE) as a data URL of the file's bytes,
        what a local vision model and an upstream both read; what is stored keeps the file's id. An image of an
        earlier turn (before `first_new`) whose file is gone since is said to be gone; one of this turn is a 404
        naming its part (`places`: the input's parts by file id)."""
        read: dict[str, tuple[str, int]] = {}
        total = 0
        resolved: list[dict[str, Any]] = []
        for index, message in enumerate(messages):
            content = message.get("content")
            if not isinstance(content, list) or not any(_image_file_url(part) for part in content):
                resolved.append(message)
                continue
            parts = []
            for part in content:
                file_id = _image_file_url(part)
                if file_id is None:
                    parts.append(part)
                    continue
                param = places.get(file_id, "input")
                if file_id not in read:
                    try:
                        read[file_id] = await self._image_data_url(project_id, file_id, param)
                    except OasisError as exc:
                        if index >= first_new or exc.status != 404:
                            raise
                        parts.append({"type": "text", "text": f"(an image, file {file_id}, no longer available)"})
                        continue
                    total += read[file_id][1]
                    if total > MAX_IMAGES_BYTES:
                        raise invalid_request(
                            f"The images a response reads are larger than {MAX_IMAGES_BYTES >> 20} MB in all.",
                            param=param,
                        )
                parts.append({**part, "image_url": {**part["image_url"], "url": read[file_id][0]}})
            resolved.append({**message, "content": parts})
        return resolved

    async def _image_data_url(self, project_id: str, file_id: str, param: str) -> tuple[str, int]:
        """The file as a data URL, and its size."""
        try:
            content = await self._files.content(project_id, file_id)
        except OasisError as exc:
            if exc.status == 404:
                raise not_found(f"No file found with id '{file_id}'.", param=param) from None
            raise
        if content.size > MAX_IMAGE_BYTES:
            raise invalid_request(f"Image file {file_id} is larger than {MAX_IMAGE_BYTES >> 20} MB.", param=param)
        data = b"".join([chunk async for chunk in content.chunks])
        kind = _image_type(data)
        if kind is None:
            raise invalid_request(f"File {file_id} is not a PNG, JPEG, GIF or WebP image.", param=param)
        return f"data:{kind};base64,{base64.b64encode(data).decode()}", len(data)

    def _checked_image_tool(self, tool: image_generation.ImageTool) -> image_generation.ImageTool:
        """The tool with its settings as the images API reads them; refused now as that API would refuse them (a
        400, or a 404 for a model not served here), the `param` named inside the tool."""
        try:
            body = self._images.check_generation(tool.request("a picture"))
        except OasisError as exc:
            raise image_generation.in_tool(exc, tool) from None
        return replace(tool, settings={key: value for key, value in body.items() if key not in ("prompt", "n")})

    async def _image_sources(
        self,
        project_id: str,
        tool: image_generation.ImageTool,
        messages: list[dict[str, Any]],
        drawn: Callable[[str], str | None],
    ) -> image_generation.ImageTool:
        """The tool with what its edits read: the newest image of the messages the model reads (images given by file
        read already), a user's or one an earlier call drew, and its mask, checked as the images API's edits check
        them. With the action `edit`, messages without an image the edit can take are a 400; with `auto`, the model
        is then offered no edit."""
        mask = await self._mask_bytes(project_id, tool) if tool.mask is not None else None
        try:
            source = _newest_image_bytes(image_generation.newest_image(messages, drawn))
            if source is None:
                raise invalid_request(
                    "The image_generation tool's action 'edit' needs an image in the conversation to edit (an input "
                    "image, or an image an earlier call drew).",
                    param=f"{tool.param}.action",
                )
            try:
                await self._images.check_edit(tool.edit_request("a picture"), source, mask)
            except OasisError as exc:
                raise image_generation.in_edit(exc, tool) from None
        except OasisError:
            if tool.action == "edit":
                raise
            source = None  # `auto`: drawn anew
        return replace(tool, source=source, mask_data=mask)

    async def _mask_bytes(self, project_id: str, tool: image_generation.ImageTool) -> bytes:
        """The bytes of the tool's `input_image_mask`, by file id or data URL."""
        assert tool.mask is not None
        if tool.mask.get("file_id"):
            where = f"{tool.param}.input_image_mask.file_id"
            url, _ = await self._image_data_url(project_id, tool.mask["file_id"], where)
        else:
            where, url = f"{tool.param}.input_image_mask.image_url", tool.mask["image_url"]
        return image_generation.image_bytes(url, where, "The mask")

    async def _code_tool(self, project_id: str, tool: code_interpreter.CodeTool) -> code_interpreter.CodeTool:
        """The tool, checked: a 400 when no sandbox can start here, a 404 for a file the project does not have or a
        container it does not have (a 400 for one expired)."""
        await self._code.check_available(f"{tool.param}.type")
        if not tool.auto:
            await self._containers.check_usable(project_id, tool.container_id, param=f"{tool.param}.container")
            return tool
        self._containers.check_memory_limit(tool.memory_limit, f"{tool.param}.container.memory_limit")
        await self._containers.check_files(project_id, tool.file_ids, param=f"{tool.param}.container.file_ids")
        return tool

    async def _truncated(self, chat: ChatCompletionRequest, first: int, turn_start: int) -> ChatCompletionRequest:
        """`truncation: auto`: the conversation (after the `first` messages, the instructions) without its oldest
        turns, as few dropped as let the prompt and the answer fit the model's context; this response's own input
        (from `turn_start` on) always stays. An upstream's model is left to its own context."""
        context = self._chat.context_length(chat.model)
        if context is None:
            return chat
        room = chat.max_completion_tokens or min(REPLY_ROOM, context // 4)
        head, body = chat.messages[:first], chat.messages[first:]
        # A turn begins with a user message: cutting there leaves no tool output without its call. Without new
        # input (a conversation or an earlier response continued as it is), the newest user message stays.
        users = [index for index, message in enumerate(body) if message.role == "user"]
        if users:
            turn_start = min(turn_start, users[-1])
        starts = sorted({0, turn_start, *(index for index in users if index < turn_start)})

        def fits(start: int) -> bool:
            candidate = chat.model_copy(update={"messages": [*head, *body[start:]]})
            try:
                prepared = self._chat.prepare_local(candidate)
            except OasisError as exc:
                if exc.code == "context_length_exceeded":
                    return False
                raise
            return prepared is None or len(prepared.prompt) + room <= context

        if await asyncio.to_thread(fits, 0):
            return chat
        # The earliest start that fits, by halving (each try renders and tokenizes the whole prompt); when even the
        # input alone does not fit, the input alone, which the context's error then refuses.
        low, high, best = 1, len(starts) - 1, len(starts) - 1
        while low <= high:
            middle = (low + high) // 2
            if await asyncio.to_thread(fits, starts[middle]):
                best, high = middle, middle - 1
            else:
                low = middle + 1
        return chat.model_copy(update={"messages": [*head, *body[starts[best] :]]})

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
            "background": plan.request.background is True,
            "error": error,
            "incomplete_details": {"reason": reason} if reason else None,
            "instructions": _instructions(plan),
            "prompt": plan.prompt.reference if plan.prompt is not None else None,
            "max_output_tokens": request.max_output_tokens,
            "model": request.model,
            "output": output,
            "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id,
            "conversation": {"id": plan.conversation_id} if plan.conversation_id else None,
            "reasoning": {
                "effort": request.reasoning.effort if request.reasoning else None,
                "summary": request.reasoning.summary if request.reasoning else None,
            },
            "store": plan.stored,
            "temperature": 1.0 if request.temperature is None else request.temperature,
            "text": text,
            "tool_choice": request.tool_choice or "auto",
            "tools": [mcp_tools.redacted(tool) for tool in request.tools or []],
            "top_p": 1.0 if request.top_p is None else request.top_p,
            "truncation": request.truncation or "disabled",
            "usage": usage,
            "user": request.user,
            "metadata": plan.metadata,
        }

    async def create(self, plan: PlannedResponse) -> dict[str, Any]:
        await self._compact(plan)
        if plan.runs_tools or plan.compaction is not None:
            # Generations with built-in calls run between them: a stream's loop, its events not sent (its errors
            # raised)
            chunks = self._first_chunks(plan, plan.chat.streamed())
            final: dict[str, Any] = {}
            async for made in self._events(plan, None, chunks, raise_errors=True):
                final = made
            return dict(final["response"])
        completion = await self._chat.create(plan.chat, plan.prepared, plan.project_id)
        choice = completion["choices"][0]
        finish = choice["finish_reason"]
        logprobs = (choice.get("logprobs") or {}).get("content")
        output = output_items(choice["message"], finished=finish not in _INCOMPLETE, logprobs=logprobs)
        response = self._response(plan, "completed", output, _usage(completion.get("usage")), finish)
        await self._keep(plan, response, None)
        return response

    async def stream(self, plan: PlannedResponse) -> AsyncIterator[dict[str, Any]]:
        """Starts the answer and waits for its first chunk (so that a refusal, an upstream's too, still gets its
        HTTP status), then returns its events. A compaction that is due is made first, for the same reason."""
        await self._compact(plan)
        chunks = self._first_chunks(plan, plan.chat.with_usage_reported())
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except BaseException:
            await close_chunks(chunks)
            raise
        return self._events(plan, first, chunks)

    def background_events(self, plan: PlannedResponse, keep: Keeper) -> AsyncGenerator[dict[str, Any], None]:
        """A background response's events after those its creation wrote (`response.created`, `.queued`), each
        numbered from there; `keep` stores its answer (instead of `_keep`)."""
        chunks = self._first_chunks(plan, plan.chat.streamed())
        return self._events(plan, None, chunks, announced=background.QUEUED_EVENTS, keep=keep)

    def _first_chunks(self, plan: PlannedResponse, chat: ChatCompletionRequest) -> AsyncIterator[dict[str, Any]]:
        """The first generation's chunks; none when approved MCP calls must run first (the generation that reads
        their outputs starts after them), when a checkpoint is resumed, or when the conversation is still to be
        compacted (a background response's: `_generations` compacts it, then starts them)."""
        if plan.approvals or plan.resumed is not None or plan.compaction_due:
            return _no_chunks()
        return self._chat.stream(chat, plan.prepared, project_id=plan.project_id)

    async def _events(
        self,
        plan: PlannedResponse,
        first: dict[str, Any] | None,
        chunks: AsyncIterator[dict[str, Any]],
        raise_errors: bool = False,
        announced: int = 0,
        keep: Keeper | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The response's events; an error while generating ends it `failed`, or is raised (`raise_errors`).
        `announced`: events already sent (`response.created` among them), which these are numbered after."""
        numbers = itertools.count(announced)

        def event(kind: str, **fields: Any) -> dict[str, Any]:
            return {"type": kind, "sequence_number": next(numbers), **fields}

        answer = _Answer(chunks)
        # All inside the try: a client gone at any event frees the answer's sequences.
        try:
            started = self._response(plan, "in_progress", [], None)
            if not announced:
                yield event("response.created", response=started)
            yield event("response.in_progress", response=started)
            writer = _OutputWriter(event, holding=self._holding(plan, answer))
            try:
                async for made in self._generations(plan, first, writer, answer):
                    if made["type"] != background.CHECKPOINT or keep is not None:
                        yield made
            except Exception as exc:
                if raise_errors and not isinstance(exc, _EndsResponse):
                    raise
                failure = exc if isinstance(exc, OasisError) else None
                if failure is None:  # a fault of ours: the stream still ends as a failed response
                    log.exception("response %s failed", plan.id)
                    failure = OasisError(
                        500, "The server had an error while generating the response.", type="server_error"
                    )
                # OpenAI's error event (its fields at the top, and under `error` where clients read them), then the
                # response failed
                error = {"code": failure.code or failure.type, "message": failure.message, "param": failure.param}
                for made in writer.cut_off():
                    yield made
                yield event("error", **error, error={**error, "type": failure.type})
                failed = self._response(plan, "failed", writer.output, answer.reported_usage, error=error)
                yield event("response.failed", response=failed)
                return
            for made in writer.close(finished=answer.finish not in _INCOMPLETE):
                yield made
            response = self._response(plan, "completed", writer.output, answer.reported_usage, answer.finish)
            done = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
            finished = event(done, response=response)
            if keep is None:
                await self._keep(plan, response, answer)
            else:
                await keep(plan, response, answer, finished)
            yield finished
        finally:
            await close_chunks(answer.chunks)

    async def _generations(
        self, plan: PlannedResponse, first: dict[str, Any] | None, writer: _OutputWriter, answer: _Answer
    ) -> AsyncIterator[dict[str, Any]]:
        """The answer's chunks as events. When the model calls a built-in tool (file_search, code_interpreter,
        image_generation, an MCP server's), the call runs and the model is asked again with what it gave (unless it
        also called the client's functions: those are answered first). Between calls, `_checkpoint` markers say
        where the generation is."""
        held: list[_HeldCall] = []
        interrupted: _HeldCall | None = None
        round_names: set[str] = set()  # the functions the latest generation called
        if plan.resumed is not None:
            if plan.code is not None and plan.resumed.get("container_id"):
                plan.code = replace(plan.code, container_id=plan.resumed["container_id"])
            for made in self._restored(plan.resumed, writer, answer):
                yield made
            held = [(name, arguments, approval) for name, arguments, approval in plan.resumed["held"]]
            started = plan.resumed["started"]
            interrupted = (started[0], started[1], started[2]) if started else None
            round_names = set(plan.resumed["round"])
            made_before = [item for item in plan.resumed["output"] if item["type"] == compaction.TOOL_TYPE]
            if made_before:  # the chat is read from the summary the dead generation made, not summarized again
                await self._read_compacted(plan, made_before[-1])
        else:
            compacting_here = plan.compaction_due  # a background response's (create and stream compact first)
            await self._compact(plan)
            if plan.compaction is not None:
                answer.compaction_usage = plan.compaction_usage
                for made in writer.compacted(plan.compaction):
                    yield made
            if compacting_here and not plan.approvals:
                answer.chunks = self._chat.stream(plan.chat.streamed(), plan.prepared, project_id=plan.project_id)
            if plan.mcp is not None:
                for server in plan.mcp.servers:
                    item = mcp_tools.list_item(new_id("mcpl_"), server, plan.mcp.listed[server.label])
                    for made in writer.mcp_listed(item):
                        yield made
            for request, approved in plan.approvals:
                if approved:
                    held.append((request["name"], request["arguments"], request["id"]))
                else:
                    answer.denied.append(request)
            if compacting_here:  # a crash from here on resumes from the summary, not summarizing again
                yield _checkpoint(plan, writer, answer, held, None, set())
        # Taken over after compacting, before the model was asked: asked now as it would have been (the request's
        # own tool choice), not as after calls.
        unasked = plan.resumed is not None and not answer.starts and not held and interrupted is None
        if unasked and not plan.approvals:
            answer.chunks = self._chat.stream(plan.chat.streamed(), plan.prepared, project_id=plan.project_id)
        # calls to run before the model is asked
        calls_first = (plan.resumed is not None and not unasked) or bool(plan.approvals)
        while True:
            if not calls_first:
                usage, finish = None, None
                answer.starts.append(len(writer.output))
                async for chunk in _with_first(first, answer.chunks):
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        delta, logprobs = choice.get("delta") or {}, (choice.get("logprobs") or {}).get("content")
                        for made in writer.take(delta, logprobs):
                            yield made
                        finish = choice.get("finish_reason") or finish
                answer.usage, answer.finish = _summed(answer.usage, usage), finish
                held = [(name, arguments, None) for name, arguments in writer.take_held_calls()]
                if not held or finish in _INCOMPLETE:
                    return
                for made in writer.close(finished=True):
                    yield made
                round_names = {name for name, _, _ in held}
                yield _checkpoint(plan, writer, answer, held, None, round_names)
            calls_first = False
            async for made in self._run_held_calls(plan, writer, answer, held, interrupted, round_names):
                yield made
            interrupted = None
            answer.searches += search_function.TOOL_NAME in round_names
            waiting = ("function_call", "custom_tool_call", "mcp_approval_request")
            generated_from = answer.starts[-1] if answer.starts else 0
            if any(item["type"] in waiting for item in writer.output[generated_from:]):
                return
            chat = await self._after_tools(plan, writer.output, answer)
            if chat is None:  # the calls spent the output budget
                answer.finish = "length"
                return
            prepared = await self._chat.prepared(chat)
            if answer.starts:  # the request was counted for its first generation (one after approved calls, too)
                await self._admit(plan, chat, prepared)
            answer.chunks = self._chat.stream(chat, prepared, project_id=plan.project_id)
            first = None
            writer.holding = self._holding(plan, answer)

    async def _admit(self, plan: PlannedResponse, chat: ChatCompletionRequest, prepared: PreparedChat | None) -> None:
        """Counts a generation after built-in calls against the project's tokens per minute, as a run's turns are
        (the request counted the first generation): its prompt (what the calls gave in it) and the most it may
        write. Past the limit the response ends `failed` with `rate_limit_exceeded`: the error is not raised as the
        request's, so that a client retrying it does not make its calls again."""
        if self._rate_limits is None or not self._rate_limits.enabled:
            return
        if prepared is None:  # an upstream's model: estimated from the characters, as its requests are
            tokens = estimate_tokens(CHAT_COMPLETIONS, chat.model_dump(mode="json", exclude_none=True))
        else:
            tokens = len(prepared.prompt) + (chat.max_completion_tokens or chat.max_tokens or 0)
        try:
            await self._rate_limits.admit(Principal(project_id=plan.project_id, key_id=None), tokens, request=False)
        except OasisError as exc:
            raise _EndsResponse(exc.status, exc.message, type=exc.type, code=exc.code) from None

    @staticmethod
    def _restored(state: dict[str, Any], writer: _OutputWriter, answer: _Answer) -> list[dict[str, Any]]:
        """Takes up a checkpoint: its output items (their events written again, for the streams of this
        generation) and what its calls showed the model."""
        made: list[dict[str, Any]] = []
        for item in state["output"]:
            made += writer.replayed(item)
        if state["cited"]:
            writer.cite(state["cited"])
        writer.written(state["written"])
        answer.usage = state["usage"]
        answer.tool_texts, answer.tool_outputs = state["tool_texts"], state["tool_outputs"]
        answer.searches, answer.code_runs = state["searches"], state["code_runs"]
        answer.images, answer.mcp_calls = state["images"], state["mcp_calls"]
        answer.denied, answer.starts = state["denied"], state["starts"]
        answer.compaction_usage = state.get("compaction_usage")
        return made

    async def _run_held_calls(
        self,
        plan: PlannedResponse,
        writer: _OutputWriter,
        answer: _Answer,
        held: list[_HeldCall],
        interrupted: _HeldCall | None,
        round_names: set[str],
    ) -> AsyncIterator[dict[str, Any]]:
        """Runs the held calls one by one, with a checkpoint after each (and before each that reaches outside).
        `interrupted`: the call reaching outside (an MCP server's tool, code run in a container) that a dead
        generation had begun: not made again, the model told it was cut off. (A search or an image is not marked
        begun: one cut off is made again.)"""
        if interrupted is not None:  # it reached outside (as decided when it began; the tools listed since may differ)
            server = (plan.resumed or {}).get("started_server")
            for made in self._cut_off_call(plan, writer, answer, interrupted, server):
                yield made
            yield _checkpoint(plan, writer, answer, held, None, round_names)
        while held:
            call, held = held[0], held[1:]
            if self._reaches_outside(plan, answer, call):
                yield _checkpoint(plan, writer, answer, held, call, round_names)
            async for made in self._made_call(plan, writer, answer, call):
                yield made
            yield _checkpoint(plan, writer, answer, held, None, round_names)

    @staticmethod
    def _reaches_outside(plan: PlannedResponse, answer: _Answer, call: _HeldCall) -> bool:
        """Whether making the call would act outside this server's own reads: a tool of an MCP server run there, or
        code run in a container (not a call past the most, nor one only asking for approval)."""
        name, arguments, approval = call
        if name == code_interpreter.FUNCTION_NAME and plan.code is not None:
            return answer.code_runs < code_interpreter.MAX_CODE_RUNS
        if plan.mcp is None or name not in plan.mcp.by_name:
            return False
        server, tool = plan.mcp.by_name[name]
        approved = approval is not None or not server.needs_approval(tool)
        runs = answer.mcp_calls < mcp_tools.MAX_CALLS and mcp_tools.arguments_of(arguments) is not None
        return approved and runs

    def _made_call(
        self, plan: PlannedResponse, writer: _OutputWriter, answer: _Answer, call: _HeldCall
    ) -> AsyncIterator[dict[str, Any]]:
        """One built-in call made: its items' events."""
        name, arguments, approval = call
        if name == search_function.TOOL_NAME and plan.search is not None:
            return self._searched(plan, writer, answer, arguments)
        if name == image_generation.FUNCTION_NAME and plan.image is not None:
            return self._imaged(plan, writer, answer, arguments)
        if plan.mcp is not None and name in plan.mcp.by_name:
            return self._mcp_called(plan, writer, answer, name, arguments, approval)
        if name == code_interpreter.FUNCTION_NAME and plan.code is not None:
            return self._coded(plan, writer, answer, arguments)
        # a resumed response's call of a tool its MCP servers no longer list
        raise OasisError(
            500,
            f"The response was calling '{name}', which none of its tools offers any more.",
            type="server_error",
            code="server_error",
        )

    @staticmethod
    def _cut_off_call(
        plan: PlannedResponse, writer: _OutputWriter, answer: _Answer, call: _HeldCall, server: str | None
    ) -> list[dict[str, Any]]:
        """A call that reaches outside, cut off by a crash: ended without being made again, the model told so
        (`server`: the label of the MCP server it went to)."""
        name, arguments, approval = call
        if server is not None or plan.code is None or name != code_interpreter.FUNCTION_NAME:
            return ResponseService._mcp_interrupted(writer, answer, server or "", name, arguments, approval)
        code, container = code_interpreter.code_of(arguments), plan.code.container_id
        item_id = new_id("ci_")
        answer.code_runs += 1
        answer.tool_texts[item_id] = _INTERRUPTED
        started = code_interpreter.call_item(item_id, code, container, "in_progress", None)
        done = code_interpreter.call_item(item_id, code, container, "incomplete", None)
        return writer.code_started(started) + writer.code_done(done)

    @staticmethod
    def _mcp_interrupted(
        writer: _OutputWriter, answer: _Answer, server: str, name: str, arguments: str, approval: str | None
    ) -> list[dict[str, Any]]:
        """An MCP call cut off by a crash, ended failed without being made again."""
        item_id = new_id("mcp_")
        started = mcp_tools.call_item(item_id, server, name, arguments, "in_progress", approval_request_id=approval)
        done = mcp_tools.call_item(item_id, server, name, arguments, "failed", None, _INTERRUPTED, approval)
        answer.mcp_calls += 1
        answer.tool_texts[item_id] = _INTERRUPTED
        return writer.mcp_call_started(started) + writer.mcp_call_done(done)

    @staticmethod
    def _holding(plan: PlannedResponse, answer: _Answer) -> set[str]:
        """The built-in tools' functions the model may still call (each has its most calls a response)."""
        names = set()
        if plan.search is not None and answer.searches < file_search.MAX_SEARCHES:
            names.add(search_function.TOOL_NAME)
        if plan.code is not None and answer.code_runs < code_interpreter.MAX_CODE_RUNS:
            names.add(code_interpreter.FUNCTION_NAME)
        if plan.image is not None and answer.images < image_generation.MAX_IMAGES:
            names.add(image_generation.FUNCTION_NAME)
        if plan.mcp is not None and answer.mcp_calls < mcp_tools.MAX_CALLS:
            names.update(plan.mcp.by_name)
        return names

    async def _coded(
        self, plan: PlannedResponse, writer: _OutputWriter, answer: _Answer, arguments: str
    ) -> AsyncIterator[dict[str, Any]]:
        """One code_interpreter call run in the container's session: its item and events."""
        assert plan.code is not None
        code = code_interpreter.code_of(arguments)
        container = plan.code.container_id
        item = code_interpreter.call_item(new_id("ci_"), code, container, "in_progress", None)
        for made in writer.code_started(item):
            yield made
        if answer.code_runs >= code_interpreter.MAX_CODE_RUNS:  # parallel calls past the most a response runs
            answer.tool_texts[item["id"]] = code_interpreter.NOT_RUN
            done = code_interpreter.call_item(item["id"], code, container, "incomplete", None)
            for made in writer.code_done(done):
                yield made
            return
        session = code_interpreter.session_key(plan.project_id, container)
        try:
            if plan.code.auto:
                await self._containers.ensure(plan.project_id, container, plan.code.file_ids, plan.code.memory_limit)
            placed = await self._containers.placed_files(plan.project_id, container)
            memory_mb = await self._containers.memory_mb(plan.project_id, container)
            call, written = await self._code.run_placed(session, item["id"], code, placed, memory_mb)
            files = await self._containers.record_written(plan.project_id, container, written)
            kept = {name: files[path]["id"] for name in written if (path := f"/mnt/data/{name}") in files}
            await self._code.note_placed(session, kept)
            writer.written(files)
        except OasisError:
            raise
        except Exception as exc:  # the sandbox could not start or run it: the response fails
            log.exception("response %s: running its code failed", plan.id)
            raise OasisError(500, f"Running the code failed: {exc}", type="server_error", code="server_error") from exc
        answer.code_runs += 1
        outputs = code_interpreter.outputs_of(call)
        answer.tool_texts[item["id"]] = code_interpreter.text_for_model(call)
        answer.tool_outputs[item["id"]] = outputs
        shown = outputs if plan.shows_outputs else None
        for made in writer.code_done(code_interpreter.call_item(item["id"], code, container, "completed", shown)):
            yield made

    async def _mcp_called(
        self,
        plan: PlannedResponse,
        writer: _OutputWriter,
        answer: _Answer,
        name: str,
        arguments: str,
        approval_request_id: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """One call of an MCP tool: run on its server (its output or error shown to the model), or, for a tool
        that needs approval and has none, an approval request that ends the response."""
        assert plan.mcp is not None
        server, tool = plan.mcp.by_name[name]
        if approval_request_id is None and server.needs_approval(tool):
            for made in writer.mcp_approval_requested(
                mcp_tools.approval_item(new_id("mcpr_"), server.label, name, arguments)
            ):
                yield made
            return
        item = mcp_tools.call_item(
            new_id("mcp_"), server.label, name, arguments, "in_progress", approval_request_id=approval_request_id
        )
        for made in writer.mcp_call_started(item):
            yield made
        output, error = None, None
        parsed = mcp_tools.arguments_of(arguments)
        if answer.mcp_calls >= mcp_tools.MAX_CALLS:
            error = mcp_tools.NOT_RUN
        elif parsed is None:
            error = "The arguments are not a JSON object."
        else:
            answer.mcp_calls += 1
            try:
                async with McpSession(server.url, server.headers, server.may_reach) as session:
                    text, failed = await session.call_tool(name, parsed)
            except McpError as exc:
                error = str(exc)
            else:
                output, error = (None, text or "the tool failed") if failed else (text, None)
        if output is not None:  # the model reads as much of it as its prompt leaves room for
            answer.tool_texts[item["id"]] = output[: self._result_chars(plan)] or "(no output)"
        done = mcp_tools.call_item(
            item["id"],
            server.label,
            name,
            arguments,
            "failed" if error else "completed",
            output,
            error,
            approval_request_id,
        )
        for made in writer.mcp_call_done(done):
            yield made

    async def _listed_mcp_tools(self, servers: list[mcp_tools.McpServer], taken: set[str | None]) -> mcp_tools.McpTools:
        """The servers' tools, listed now (a server that cannot list them is a 424 naming it), those each offers
        named as functions the model may call (a name two tools share is a 400)."""
        remote = mcp_tools.McpTools(servers)
        for server in servers:
            try:
                async with McpSession(server.url, server.headers, server.may_reach) as session:
                    listed = await session.list_tools()
            except McpError as exc:
                raise mcp_tools.listing_failed(server, exc) from None
            offered = [tool for tool in listed if server.offers(tool)]
            remote.listed[server.label] = offered
            for tool in offered:
                if tool["name"] in taken or tool["name"] in remote.by_name:
                    raise invalid_request(
                        f"Tool '{tool['name']}' of MCP server '{server.label}' has the name of another tool: "
                        "leave one of them out (`allowed_tools`).",
                        param=f"{server.param}.allowed_tools",
                    )
                remote.by_name[tool["name"]] = (server, tool)
        return remote

    async def _approvals(
        self, project_id: str, request_input: Any, remote: mcp_tools.McpTools | None
    ) -> list[tuple[dict[str, Any], bool]]:
        """The input's `mcp_approval_response`s, each with the approval request it answers (a 404 for one the
        project has not stored; a 400 for a tool this request does not offer)."""
        found: list[tuple[dict[str, Any], bool]] = []
        items = request_input if isinstance(request_input, list) else []
        made = {
            item.get("approval_request_id")
            for item in items
            if isinstance(item, dict) and item.get("type") == "mcp_call"
        }
        for index, item in enumerate(items):
            if not _is_approval(item):
                continue
            where = f"input[{index}]"
            request_id = item.get("approval_request_id")
            if not isinstance(request_id, str) or not isinstance(item.get("approve"), bool):
                raise invalid_request(
                    "An mcp_approval_response needs `approval_request_id` and `approve`.", param=where
                )
            async with self._db.session() as session:
                asked = await rows.stored_item(session, project_id, request_id)
            if asked is None or asked.get("type") != "mcp_approval_request":
                raise not_found(
                    f"No MCP approval request found with id '{request_id}'.", param=f"{where}.approval_request_id"
                )
            async with self._db.session() as session:
                # an approval sent again (a client that keeps its history): its call was made once, and is not again
                if request_id in made or await rows.approval_used(session, project_id, request_id):
                    continue
            if remote is None or asked.get("name") not in remote.by_name:
                raise invalid_request(
                    f"The approved call is of tool '{asked.get('name')}', which no mcp tool of this request offers.",
                    param=f"{where}.approval_request_id",
                )
            found.append((asked, item["approve"]))
        return found

    async def _imaged(
        self, plan: PlannedResponse, writer: _OutputWriter, answer: _Answer, arguments: str
    ) -> AsyncIterator[dict[str, Any]]:
        """One image_generation call drawn: its item (the image in base64) and events; a prompt the images service
        refuses (too long, say) fails the call, and the model is told why."""
        assert plan.image is not None
        prompt = image_generation.prompt_of(arguments)
        item = image_generation.call_item(new_id("ig_"), "in_progress")
        for made in writer.image_started(item):
            yield made
        if answer.images >= image_generation.MAX_IMAGES or not prompt:  # past the most, or nothing to draw
            answer.tool_texts[item["id"]] = image_generation.NOT_DRAWN if prompt else "Not drawn: no prompt given."
            for made in writer.image_failed(image_generation.call_item(item["id"], "failed")):
                yield made
            return
        # images part way only where events are read (a stream, or a background response's stored events)
        shown = plan.request.stream or plan.request.background
        previews = PartialImages(plan.image.partial_images if shown else 0)
        sent = previews if previews.count else None
        edits = plan.image.edits(arguments)
        if edits:
            assert plan.image.source is not None
            drawing = self._images.edit_base64(
                plan.image.edit_request(prompt), plan.image.source, plan.image.mask_data, plan.project_id, sent
            )
        else:
            drawing = self._images.generate_base64(plan.image.request(prompt), plan.project_id, sent)
        try:
            async with contextlib.aclosing(previews.drawn(drawing)) as partials:  # a client gone stops its previews
                async for index, partial in partials:
                    for made in writer.image_partial(item, index, partial):
                        yield made
            drawn = previews.result
        except OasisError as exc:
            if exc.status != 400:
                raise
            answer.tool_texts[item["id"]] = f"The image could not be drawn: {exc.message}"
            for made in writer.image_failed(image_generation.call_item(item["id"], "failed")):
                yield made
            return
        except Exception as exc:  # the image engine failed: the response fails, as OpenAI's would
            log.exception("response %s: drawing its image failed", plan.id)
            raise OasisError(500, f"Drawing the image failed: {exc}", type="server_error", code="server_error") from exc
        answer.images += 1
        picture = drawn["data"][0]
        details: dict[str, Any] = {key: drawn[key] for key in image_generation.SHOWN_SETTINGS if key in drawn}
        details["revised_prompt"] = picture.get("revised_prompt") or prompt
        details["action"] = "edit" if edits else "generate"
        answer.tool_texts[item["id"]] = image_generation.SHOWN
        done = image_generation.call_item(item["id"], "completed", picture.get("b64_json"), **details)
        for made in writer.image_done(done):
            yield made

    async def _searched(
        self, plan: PlannedResponse, writer: _OutputWriter, answer: _Answer, arguments: str
    ) -> AsyncIterator[dict[str, Any]]:
        """One file_search call run: its item and events; its results are cited in what the model writes next."""
        assert plan.search is not None
        queries = search_function.queries_of(arguments, plan.question)
        item = file_search.call_item(new_id("fs_"), queries, "in_progress", None)
        for made in writer.search_started(item):
            yield made
        try:
            _, hits = await self._searcher.search(plan.project_id, plan.search.store_ids, queries, plan.search.settings)
        except OasisError:
            raise
        except Exception as exc:  # the embedding engine or the database: the response fails, as OpenAI's would
            log.exception("response %s: the file search failed", plan.id)
            raise OasisError(500, f"The file search failed: {exc}", type="server_error", code="server_error") from exc
        results = file_search.result_entries(hits)
        answer.tool_texts[item["id"]] = file_search.results_for_model(results, self._result_chars(plan))
        answer.tool_outputs[item["id"]] = results
        writer.cite(results)
        shown = results if plan.shows_results else None
        for made in writer.search_done(file_search.call_item(item["id"], queries, "completed", shown)):
            yield made

    def _result_chars(self, plan: PlannedResponse) -> int:
        """How much of a search's results the model is shown: of the context the prompt leaves (less room for the
        answer), a share, and never less than an eighth of the context (the best passage, at least)."""
        context = self._chat.context_length(plan.request.model) or DEFAULT_CONTEXT
        prompt = len(plan.prepared.prompt) if plan.prepared is not None else 0
        left = context - prompt - min(REPLY_ROOM, context // 4)
        return max(left, context // 8) * file_search.RESULT_CHARS_PER_CONTEXT_TOKEN

    async def _after_tools(
        self, plan: PlannedResponse, output: list[dict[str, Any]], answer: _Answer
    ) -> ChatCompletionRequest | None:
        """The chat request that answers after built-in calls ran: the request as it was sent (no field it left
        out is added, so an upstream keeps its own defaults), with the calls and what they gave, the output
        budget left, a built-in tool no longer offered once the response has called it its most, and the tool
        choice `auto` (a forced call has been made)."""
        body = plan.chat.model_dump(mode="json", by_alias=True, exclude_unset=True)
        denied = [message for request in answer.denied for message in mcp_tools.denied_messages(request)]
        answered = _answer_messages(output, answer.tool_texts, answer.starts)
        body["messages"] = _joined_turns([*body["messages"], *denied, *answered])
        if plan.request.max_output_tokens is not None:
            left = plan.request.max_output_tokens - ((answer.usage or {}).get("completion_tokens") or 0)
            if left < 1:
                return None
            body["max_completion_tokens"] = left
        offered = self._holding(plan, answer)
        exhausted = {
            name
            for name, tool in (
                (search_function.TOOL_NAME, plan.search),
                (code_interpreter.FUNCTION_NAME, plan.code),
                (image_generation.FUNCTION_NAME, plan.image),
                *((name, plan.mcp) for name in (plan.mcp.by_name if plan.mcp else {})),
            )
            if tool is not None and name not in offered
        }
        tools = [tool for tool in body.get("tools") or [] if _function_name(tool) not in exhausted]
        if tools:
            body["tools"] = tools
            if body.get("tool_choice", "none") != "none":
                body["tool_choice"] = "auto"
        else:
            for key in ("tools", "tool_choice", "parallel_tool_calls"):
                body.pop(key, None)
        body["stream"], body["stream_options"] = True, {"include_usage": True}
        chat = ChatCompletionRequest.model_validate(body)
        if plan.request.truncation == "auto":
            chat = await self._truncated(chat, plan.instruction_count, plan.turn_start)
        return chat

    @staticmethod
    def conversation_items(
        plan: PlannedResponse, response: dict[str, Any], answer: _Answer | None
    ) -> list[dict[str, Any]]:
        """The items the response adds to its conversation: its input, then its output with what its built-in calls
        made kept whole (a later response reads it)."""
        made = answer.tool_outputs if answer is not None else {}
        return [*plan.input_items, *(_whole(item, made) for item in response["output"])]

    @staticmethod
    def stored_values(plan: PlannedResponse, response: dict[str, Any], answer: _Answer | None) -> dict[str, Any]:
        """The stored row's columns that a finished response fills in."""
        tool_texts = answer.tool_texts if answer is not None else {}
        starts = answer.starts if answer is not None else [0]
        conversation = [*plan.turn, *_answer_messages(response["output"], tool_texts, starts, compactions=True)]
        return {
            "response_json": json.dumps(response),
            "status": response["status"],
            "conversation_json": json.dumps(conversation),
        }

    async def _keep(self, plan: PlannedResponse, response: dict[str, Any], answer: _Answer | None) -> None:
        """Adds the response's items to its conversation, and stores it unless asked not to; one that cannot be
        kept is still the client's (logged)."""
        if plan.conversation_id is not None:
            try:
                await self._conversations.append(plan.conversation_id, self.conversation_items(plan, response, answer))
            except Exception:
                log.exception("response %s could not be added to conversation %s", plan.id, plan.conversation_id)
        if not plan.stored:
            return
        row = StoredResponse(
            id=plan.id,
            project_id=plan.project_id,
            created_at=plan.created_at,
            previous_response_id=plan.request.previous_response_id,
            input_items_json=json.dumps(plan.input_items),
            **self.stored_values(plan, response, answer),
        )
        try:
            async with self._db.session() as session:
                session.add(row)
                await session.commit()
        except Exception:
            log.exception("response %s could not be stored", plan.id)

    async def enqueue(self, plan: PlannedResponse) -> dict[str, Any]:
        """Stores a background response queued, with its first events, for a worker to generate (it plans the
        request again: nothing of this plan but the request, its id and its time is kept)."""
        self._chat.check_servable(plan.chat.model)
        response = self._response(plan, "queued", [], None)
        request = plan.request.model_dump(mode="json", by_alias=True, exclude_unset=True)
        async with self._db.session() as session:
            session.add(
                StoredResponse(
                    id=plan.id,
                    project_id=plan.project_id,
                    created_at=plan.created_at,
                    previous_response_id=plan.request.previous_response_id,
                    response_json=json.dumps(response),
                    input_items_json=json.dumps(plan.input_items),
                    conversation_json="[]",
                    status="queued",
                    background=True,
                    request_json=json.dumps(request),
                    next_event=background.QUEUED_EVENTS,
                )
            )
            rows.add_events(session, plan.id, "", background.queued_events(response))  # of no generation
            await session.commit()
        self._wake_workers()
        return response

    async def cancel(self, project_id: str, response_id: str) -> dict[str, Any]:
        """Cancels a background response still queued or being generated; a finished one is returned as it is
        (cancelling twice is no error)."""
        async with self._db.session() as session:
            row = await self._row(session, project_id, response_id)
            if not row.background:
                raise invalid_request(
                    "Only a response created with `background: true` can be cancelled.", param="response_id"
                )
            if row.status in ("queued", "in_progress"):
                response = {**json.loads(row.response_json), "status": "cancelled"}
                if await rows.cancel(session, row.seq, json.dumps(response)):
                    await session.commit()
                    self.cancel_here(response_id)
                    self.bell.ring(response_id)
                    return response
                await session.rollback()
        return await self.retrieve(project_id, response_id)  # it finished meanwhile

    async def stream_again(
        self, project_id: str, response_id: str, starting_after: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        """A background response's events after `starting_after` (all when None), then those still to come."""
        async with self._db.session() as session:
            row = await self._row(session, project_id, response_id)
        if not row.background:
            raise invalid_request(
                "Only a response created with `background: true` can be streamed again.", param="stream"
            )
        return background.follow(self._db, self.bell, response_id, starting_after)

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
            row.request_json = row.checkpoint_json = None
            await rows.drop_events(session, response_id)
            await session.commit()
        self.cancel_here(response_id)
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
    is done when another item opens (or the answer ends). Calls are told apart by their `index` (or a new id).
    A call of a built-in tool's function (`holding`: file_search, python) is held back (its arguments gathered)
    for the response to run; after a search, the text is annotated where it cites a result."""

    def __init__(self, event: Callable[..., dict[str, Any]], holding: set[str] | None = None) -> None:
        self._event = event
        self.holding = holding or set()
        self.output: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._call_index: int | None = None  # the open call's, as the deltas number it
        self._text = ""
        self._held: list[tuple[str, str]] = []  # the held calls' function names and arguments
        self._held_index: int | None = None  # the held call still being written, as the deltas number it
        self._held_id: str | None = None
        self._citer: Citer | None = None
        self._cited: list[dict[str, Any]] = []  # the results the text may cite
        self._filenames: dict[str, str] = {}
        self._annotations: list[dict[str, Any]] = []  # the open message's
        self._logprobs: list[dict[str, Any]] = []  # the open message's, sent with its deltas
        self._pending_logprobs: list[dict[str, Any]] = []  # settled before the text they go with
        self._written: dict[str, dict[str, Any]] = {}  # container files the code wrote, by path

    def written(self, files: dict[str, dict[str, Any]]) -> None:
        """Container files the code wrote (by path): the text that follows is annotated where it names them."""
        self._written.update(files)

    @property
    def cited(self) -> list[dict[str, Any]]:
        """The search results the text may cite."""
        return self._cited

    @property
    def written_files(self) -> dict[str, dict[str, Any]]:
        return self._written

    def replayed(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """The events of an item made by an earlier generation (a checkpoint's), as if it were made again."""
        kind = item["type"]
        if kind in ("message", "reasoning", "function_call", "custom_tool_call"):
            return self._said_again(item)
        begun = {**item, "status": "in_progress"}
        if kind == "file_search_call":
            return self.search_started({**begun, "results": None}) + self.search_done(item)
        if kind == "code_interpreter_call":
            return self.code_started({**begun, "outputs": None}) + self.code_done(item)
        if kind == "image_generation_call":
            drawn = item["status"] == "completed"
            return self.image_started({**begun, "result": None}) + (
                self.image_done(item) if drawn else self.image_failed(item)
            )
        if kind == "mcp_call":
            return self.mcp_call_started({**begun, "output": None, "error": None}) + self.mcp_call_done(item)
        if kind == "mcp_list_tools":
            return self.mcp_listed(item)
        return self._added(item) + self._tool_done(item, None)

    def _said_again(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """A message, reasoning or function call made again: its item opened, its content whole in one delta each,
        then done."""
        kind = item["type"]
        where = {"item_id": item["id"], "output_index": len(self.output)}
        made: list[dict[str, Any]] = []
        if kind == "message":
            made += self._added({**item, "status": "in_progress", "content": []})
            for index, part in enumerate(item["content"]):
                text, logprobs = part.get("text", ""), part.get("logprobs") or []
                place = {**where, "content_index": index}
                made.append(self._event("response.content_part.added", **place, part=text_part("")))
                made.append(self._event("response.output_text.delta", **place, delta=text, logprobs=logprobs))
                for number, annotation in enumerate(part.get("annotations") or []):
                    made.append(
                        self._event(
                            "response.output_text.annotation.added",
                            **place,
                            annotation_index=number,
                            annotation=annotation,
                        )
                    )
                made.append(self._event("response.output_text.done", **place, text=text, logprobs=logprobs))
                made.append(self._event("response.content_part.done", **place, part=part))
        elif kind == "reasoning":
            made += self._added({**item, "content": []})
            for index, part in enumerate(item.get("content") or []):
                place = {**where, "content_index": index}
                made.append(self._event("response.content_part.added", **place, part={**part, "text": ""}))
                made.append(self._event("response.reasoning_text.delta", **place, delta=part["text"]))
                made.append(self._event("response.reasoning_text.done", **place, text=part["text"]))
                made.append(self._event("response.content_part.done", **place, part=part))
        elif kind == "custom_tool_call":
            made += self._added({**item, "input": "", "status": "in_progress"})
            made.append(self._event("response.custom_tool_call_input.delta", **where, delta=item["input"]))
            made.append(self._event("response.custom_tool_call_input.done", **where, input=item["input"]))
        else:
            made += self._added({**item, "arguments": "", "status": "in_progress"})
            made.append(self._event("response.function_call_arguments.delta", **where, delta=item["arguments"]))
            arguments = item["arguments"]
            made.append(
                self._event("response.function_call_arguments.done", **where, name=item["name"], arguments=arguments)
            )
        made.append(self._event("response.output_item.done", output_index=len(self.output), item=item))
        self.output.append(item)
        self._open, self._text, self._call_index = None, "", None
        return made

    def take_held_calls(self) -> list[tuple[str, str]]:
        """(function name, arguments) of each built-in call held back since the last take."""
        held, self._held, self._held_index, self._held_id = self._held, [], None, None
        return held

    def cite(self, results: list[dict[str, Any]]) -> None:
        """Annotates the text that follows where it draws on these results (with those cited before)."""
        self._filenames.update({result["file_id"]: result["filename"] for result in results})
        self._cited += results
        self._citer = Citer(file_search.sources(self._cited))

    def search_started(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        made = self._added(item)
        where = {"item_id": item["id"], "output_index": len(self.output)}
        made.append(self._event("response.file_search_call.in_progress", **where))
        made.append(self._event("response.file_search_call.searching", **where))
        return made

    def search_done(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        return self._tool_done(item, "response.file_search_call.completed")

    def code_started(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """A run's item added, its code (written whole before it runs), and its run begun."""
        made = self._added(item)
        where = {"item_id": item["id"], "output_index": len(self.output)}
        made.append(self._event("response.code_interpreter_call.in_progress", **where))
        made.append(self._event("response.code_interpreter_call_code.delta", **where, delta=item["code"]))
        made.append(self._event("response.code_interpreter_call_code.done", **where, code=item["code"]))
        made.append(self._event("response.code_interpreter_call.interpreting", **where))
        return made

    def code_done(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """A run's item done; `completed` announced only for a run that completed (not one left unrun or cut off)."""
        completed = "response.code_interpreter_call.completed" if item["status"] == "completed" else None
        return self._tool_done(item, completed)

    def image_started(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        made = self._added(item)
        where = {"item_id": item["id"], "output_index": len(self.output)}
        made.append(self._event("response.image_generation_call.in_progress", **where))
        made.append(self._event("response.image_generation_call.generating", **where))
        return made

    def image_partial(self, item: dict[str, Any], index: int, partial: Drawn) -> list[dict[str, Any]]:
        """An image part way, while the call's item is open (it is added, not yet done), with the settings it is
        drawn with."""
        where = {"item_id": item["id"], "output_index": len(self.output)}
        settings = {key: partial.settings[key] for key in image_generation.SHOWN_SETTINGS if key in partial.settings}
        b64 = base64.b64encode(partial.files[0]).decode("ascii")
        event = "response.image_generation_call.partial_image"
        return [self._event(event, **where, partial_image_index=index, partial_image_b64=b64, **settings)]

    def image_done(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        return self._tool_done(item, "response.image_generation_call.completed")

    def mcp_listed(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        made = self._added({**item, "tools": []})
        where = {"item_id": item["id"], "output_index": len(self.output)}
        made.append(self._event("response.mcp_list_tools.in_progress", **where))
        return made + self._tool_done(item, "response.mcp_list_tools.completed")

    def compacted(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        return self._added(item) + self._tool_done(item, None)

    def mcp_approval_requested(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        return self._added(item) + self._tool_done(item, None)

    def mcp_call_started(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """A call's item added, its arguments (whole: the call runs once they are written), and its run begun."""
        made = self._added(item)
        where = {"item_id": item["id"], "output_index": len(self.output)}
        made.append(self._event("response.mcp_call_arguments.delta", **where, delta=item["arguments"]))
        made.append(self._event("response.mcp_call_arguments.done", **where, arguments=item["arguments"]))
        made.append(self._event("response.mcp_call.in_progress", **where))
        return made

    def mcp_call_done(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        ended = "response.mcp_call.failed" if item["status"] == "failed" else "response.mcp_call.completed"
        return self._tool_done(item, ended)

    def image_failed(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """A call that drew nothing: its item done, failed, without a `completed` event."""
        return self._tool_done(item, None)

    def _tool_done(self, item: dict[str, Any], completed: str | None) -> list[dict[str, Any]]:
        where = {"item_id": item["id"], "output_index": len(self.output)}
        made = [self._event(completed, **where)] if completed else []
        made.append(self._event("response.output_item.done", output_index=len(self.output), item=item))
        self.output.append(item)
        self._open, self._text = None, ""
        return made

    def _holds(self, call: dict[str, Any], body: dict[str, Any], index: Any) -> bool:
        """Whether this call delta belongs to a held built-in call (and is gathered there)."""
        continues = (
            self._held_index is not None
            and index == self._held_index
            and not (call.get("id") and call["id"] != self._held_id)
        )
        if continues:
            name, arguments = self._held[-1]
            self._held[-1] = (name, arguments + (body.get("arguments") or ""))
            return True
        if body.get("name") in self.holding:
            self._held.append((body["name"], body.get("arguments") or ""))
            self._held_index, self._held_id = index, call.get("id")
            return True
        self._held_index = None
        return False

    def take(self, delta: dict[str, Any], logprobs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The events of one chat delta; `logprobs`: its content tokens' (when asked for)."""
        made: list[dict[str, Any]] = []
        # The logprobs of the text's tokens (a local engine may settle some before the text they go with shows);
        # an upstream's for thinking or calls are not the message's.
        if logprobs and (delta.get("content") or not (delta.get("reasoning_content") or delta.get("tool_calls"))):
            self._pending_logprobs += logprobs
        if delta.get("reasoning_content"):
            made += self._opened("reasoning")
            self._text += delta["reasoning_content"]
            made.append(self._piece("response.reasoning_text.delta", delta["reasoning_content"], content_index=0))
        if delta.get("content"):
            made += self._opened("message")
            made += self._said(delta["content"])
        for call in delta.get("tool_calls") or []:
            custom = call.get("type") == "custom" or "custom" in call
            body = (call.get("custom") if custom else call.get("function")) or {}
            index = call.get("index", self._call_index)
            if not custom and self._holds(call, body, index):
                continue
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

    def cut_off(self) -> list[dict[str, Any]]:
        """Ends the open item as the response fails: a message or a call `incomplete` with what it had, a built-in
        call that was running `failed`."""
        item = self._open
        if item is None or item["type"] in ("message", "reasoning", "function_call", "custom_tool_call"):
            return self._closed(finished=False)
        return self._tool_done({**item, "status": "failed"}, None)

    def _said(self, text: str) -> list[dict[str, Any]]:
        """A piece of the open message's text: its delta (with the logprobs settled since the last one), and the
        citations of the sentences it ends."""
        pieces = [text] if self._citer is None else self._citer.feed(text)
        made: list[dict[str, Any]] = []
        for piece in pieces:
            if not isinstance(piece, str) and piece.source is not None:
                made.append(self._annotated(piece.source.file_id))
                continue
            said = piece if isinstance(piece, str) else piece.text
            self._text += said
            logprobs, self._pending_logprobs = self._pending_logprobs, []
            self._logprobs += logprobs
            made.append(self._piece("response.output_text.delta", said, content_index=0, logprobs=logprobs))
        return made

    def _annotated(self, file_id: str) -> dict[str, Any]:
        """A citation of the file at the end of the open message's text so far."""
        assert self._open is not None
        annotation = {
            "type": "file_citation",
            "file_id": file_id,
            "filename": self._filenames.get(file_id, ""),
            "index": len(self._text),
        }
        self._annotations.append(annotation)
        return self._annotation_event(annotation)

    def _annotation_event(self, annotation: dict[str, Any]) -> dict[str, Any]:
        """The event of the open message's latest annotation."""
        assert self._open is not None
        return self._event(
            "response.output_text.annotation.added",
            item_id=self._open["id"],
            output_index=len(self.output),
            content_index=0,
            annotation_index=len(self._annotations) - 1,
            annotation=annotation,
        )

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
            if self._citer is not None:  # the last sentence's citation, when no break followed it
                made += [self._annotated(segment.source.file_id) for segment in self._citer.end() if segment.source]
            for citation in code_interpreter.file_citations(text, self._written):
                self._annotations.append(citation)
                made.append(self._annotation_event(citation))
            annotations, self._annotations = self._annotations, []
            logprobs, self._logprobs, self._pending_logprobs = self._logprobs + self._pending_logprobs, [], []
            done = message_item(item["id"], text, status, annotations, logprobs)
            made.append(
                self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=logprobs)
            )
            part = text_part(text, annotations, logprobs)
            made.append(self._event("response.content_part.done", **where, content_index=0, part=part))
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
