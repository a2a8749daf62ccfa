"""What a run shows the model: its instructions, then the thread (messages, and the tool calls earlier steps made
with their outputs), cut to fit by the run's truncation strategy."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from oasis.services.assistants import code_interpreter, file_search
from oasis.storage.tables import Run, RunStep, ThreadMessage

ChatMessages = list[dict[str, Any]]
# Tool calls shown to the model again.
_SHOWN_CALLS = ("function", file_search.TOOL_NAME, code_interpreter.TOOL_TYPE)
DEFAULT_RESULT_CHARS = 16_000


def text_of(content_json: str) -> str:
    """A message's text parts; images are not shown to a text model."""
    parts = json.loads(content_json)
    return "\n".join(part["text"]["value"] for part in parts if part["type"] == "text")


def image_part_of(message: ThreadMessage) -> int | None:
    """The position of the first image part of a user's message: oasis's chat models read text only. (An assistant
    message's images are code_interpreter's figures, which the model knows of from the call's output.)"""
    if message.role != "user":
        return None
    parts = json.loads(message.content_json)
    return next((index for index, part in enumerate(parts) if part["type"] != "text"), None)


def _message_item(message: ThreadMessage) -> ChatMessages:
    return [{"role": message.role, "content": text_of(message.content_json)}]


def _step_item(step: RunStep, result_chars: int) -> ChatMessages:
    """A finished tool-call step as the model made it: its calls (file_search ones as the function the model was
    offered), then each call's output."""
    calls = [call for call in json.loads(step.step_details_json)["tool_calls"] if call["type"] in _SHOWN_CALLS]
    if not calls:
        return []
    requested = []
    outputs = []
    for call in calls:
        if call["type"] == "function":
            function = call["function"]
            name, arguments, output = function["name"], function["arguments"], function["output"]
        elif call["type"] == code_interpreter.TOOL_TYPE:
            name = code_interpreter.FUNCTION_NAME
            arguments = json.dumps({"code": call[code_interpreter.TOOL_TYPE]["input"]})
            output = code_interpreter.output_for_model(call)
        else:
            name, arguments = file_search.TOOL_NAME, json.dumps({"query": (call.get("_queries") or [""])[0]})
            output = file_search.results_for_model(call, result_chars)
        requested.append({"id": call["id"], "type": "function", "function": {"name": name, "arguments": arguments}})
        outputs.append({"role": "tool", "tool_call_id": call["id"], "content": output or ""})
    return [{"role": "assistant", "content": None, "tool_calls": requested}, *outputs]


@dataclass(frozen=True)
class ThreadItem:
    messages: ChatMessages
    is_message: bool  # a thread message (counted by `last_messages`), not a tool call and its output


def thread_items(
    messages: list[ThreadMessage], steps: list[RunStep], result_chars: int = DEFAULT_RESULT_CHARS
) -> list[ThreadItem]:
    """Messages in order, each finished tool-call step right after the message that was newest when it began
    (before the next live one, when that message has since been deleted). A search's results are shown within
    `result_chars` characters."""
    keyed: list[tuple[tuple[int, int, int], ThreadItem]] = [
        ((message.seq, 0, 0), ThreadItem(_message_item(message), True)) for message in messages
    ]
    keyed.extend(
        ((step.after_message_seq, 1, step.seq), ThreadItem(_step_item(step, result_chars), False))
        for step in steps
        if step.status == "completed"
    )
    keyed.sort(key=lambda entry: entry[0])
    return [item for _, item in keyed if item.messages]


def system_text(run: Run) -> str | None:
    parts = [text for text in (run.instructions, run.additional_instructions) if text]
    return "\n\n".join(parts) if parts else None


class DoesNotFit(Exception):
    """Even the newest message alone is over the limit."""


def fitted(
    run: Run, items: list[ThreadItem], measure: Callable[[ChatMessages], int | None], limit: int | None
) -> tuple[ChatMessages, int | None]:
    """The chat messages for the run's next generation and their prompt size (None when it cannot be measured
    here: a model served by an upstream engine). `last_messages` keeps that many messages; `auto` drops items in
    the middle of the thread until the prompt is within `limit` tokens, as OpenAI describes it: the thread's first
    message (what it is about, often) stays with the newest ones while they fit together, else the oldest go first.
    The list returned is the one given to `measure`."""
    strategy = json.loads(run.truncation_json)
    cut_to_last = strategy.get("type") == "last_messages" and bool(strategy.get("last_messages"))
    if cut_to_last:
        keep = int(strategy["last_messages"])
        positions = [index for index, item in enumerate(items) if item.is_message]
        if len(positions) > keep:
            items = items[positions[-keep] :]
    system = system_text(run)
    head: ChatMessages = [{"role": "system", "content": system}] if system else []

    def build(kept: list[ThreadItem], first: int) -> ChatMessages:
        return head + [message for item in kept + items[first:] for message in item.messages]

    whole = build([], 0)
    size = measure(whole)
    if size is None or limit is None or size <= limit:
        return whole, size
    if not cut_to_last and len(items) > 2:
        found = _fewest_dropped(items[:1], 2, len(items), build, measure, limit)
        if found is not None:
            return found
    found = _fewest_dropped([], 1, len(items), build, measure, limit)
    if found is None:
        raise DoesNotFit
    return found


def _fewest_dropped(
    kept: list[ThreadItem],
    low: int,
    count: int,
    build: Callable[[list[ThreadItem], int], ChatMessages],
    measure: Callable[[ChatMessages], int | None],
    limit: int,
) -> tuple[ChatMessages, int] | None:
    """`kept`, then the items from the earliest place in low..count-1 after which the prompt fits within `limit`,
    found by halving (each measure renders the whole prompt); None when even the newest item does not fit."""
    high = count - 1
    best: tuple[ChatMessages, int] | None = None
    while low <= high:
        middle = (low + high) // 2
        candidate = build(kept, middle)
        candidate_size = measure(candidate) or 0
        if candidate_size <= limit:
            best = (candidate, candidate_size)
            high = middle - 1
        else:
            low = middle + 1
    return best
