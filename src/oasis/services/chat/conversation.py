"""The conversation as a chat template reads it: plain dicts in Hugging Face's shape, earlier calls with their
arguments as the template wants them (an object, or the JSON string), Mistral's short call ids, and no
earlier thinking."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from oasis.errors import invalid_request
from oasis.protocol.extensions import ChatCompletionRequest, CustomToolCall
from oasis.services.chat.reasoning import think_tags, without_thinking
from oasis.services.chat.template import call_arguments
from oasis.services.chat.tool_formats import ToolFormat


def _text_of(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        part = getattr(part, "root", part)
        kind = getattr(part, "type", None)
        if kind == "refusal":  # an earlier answer's refusal: what the assistant said
            texts.append(part.refusal)
            continue
        if kind != "text":
            what = "image" if kind == "image_url" else kind
            raise invalid_request(
                f"This model reads text only: {what} content parts are not supported.",
                param=f"messages[{index}].content",
                code=f"{what}_parts_unsupported",
            )
        texts.append(part.text)
    return "".join(texts)


def template_messages(request: ChatCompletionRequest, template: str, tool_format: ToolFormat) -> list[dict[str, Any]]:
    """The conversation as plain dicts, the shape Hugging Face chat templates read: earlier calls with their
    arguments as the template wants them, earlier thinking left out."""
    shown = call_arguments(template) if "tools" in template else "unshown"
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        entry: dict[str, Any] = {
            # harmony templates (gpt-oss) tell developer from system instructions; others know only system
            "role": "system" if message.role == "developer" and "<|channel|>" not in template else message.role,
            "content": _text_of(message.content, index),
        }
        if entry["role"] == "assistant" and entry["content"]:
            entry["content"] = without_thinking(entry["content"], think_tags(template))
        for extra in ("name", "tool_call_id"):
            if getattr(message, extra, None) is not None:
                entry[extra] = getattr(message, extra)
        if tool_format.short_ids and "tool_call_id" in entry:
            entry["tool_call_id"] = _short_id(entry["tool_call_id"])
        tool_calls = getattr(message, "tool_calls", None)
        if tool_calls is not None:
            calls = [_as_function_call(call) for call in tool_calls]
            entry["tool_calls"] = [_template_call(call, shown == "string", tool_format.short_ids) for call in calls]
            if shown == "unshown" and not entry["content"]:
                # The template will not render the calls, so the model sees them as the JSON it would write.
                entry["content"] = json.dumps(
                    [
                        {"name": c["function"]["name"], "arguments": _arguments_value(c["function"]["arguments"])}
                        for c in calls
                    ]
                )
        messages.append(entry)
    if tool_format.name == "gemma4" and "OpenAI Chat Completions" not in template:
        return _tool_responses_inside(messages)
    return messages


def _tool_responses_inside(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Gemma 4's earlier templates read a call's results from its assistant turn (`tool_responses`, each a name
    and the response), not from `tool` turns; the answer that follows joins that turn too (as llama.cpp does)."""
    folded: list[dict[str, Any]] = []
    position = 0
    while position < len(messages):
        message = messages[position]
        position += 1
        if message["role"] != "assistant" or not message.get("tool_calls"):
            folded.append(message)
            continue
        turn = {**message, "content": None, "tool_responses": []}
        calls = message["tool_calls"]
        while position < len(messages) and messages[position]["role"] == "tool":
            result = messages[position]
            number = len(turn["tool_responses"])
            name = calls[number]["function"].get("name") if number < len(calls) else None
            turn["tool_responses"].append(
                {"name": name or result.get("tool_call_id", ""), "response": _arguments_value(result["content"])}
            )
            position += 1
        after = messages[position] if position < len(messages) else None
        if after is not None and after["role"] == "assistant" and not after.get("tool_calls") and after["content"]:
            turn["content"] = after["content"]
            position += 1
        if not turn["tool_responses"]:
            del turn["tool_responses"]
        folded.append(turn)
    return folded


def _as_function_call(call: Any) -> dict[str, Any]:
    """An earlier call as a template renders it: a custom tool's as the call of a function of its `input`, as the
    model was shown the tool (services/chat/tools.py)."""
    if isinstance(call, CustomToolCall):
        arguments = json.dumps({"input": call.custom.input})
        return {"id": call.id, "type": "function", "function": {"name": call.custom.name, "arguments": arguments}}
    dumped: dict[str, Any] = call.model_dump()
    return dumped


def _template_call(call: dict[str, Any], arguments_as_text: bool, short_ids: bool) -> dict[str, Any]:
    function = call.get("function") or {}
    if not arguments_as_text and "arguments" in function:
        function = {**function, "arguments": _arguments_value(function["arguments"])}
    return {**call, "function": function, **({"id": _short_id(call["id"])} if short_ids and "id" in call else {})}


def _short_id(call_id: str) -> str:
    """Mistral's templates accept only 9 letters and digits as a call id; the same id maps the same way in the
    call and in its result."""
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


def _arguments_value(arguments: str | None) -> Any:
    """A call's arguments as the JSON they hold; models emit broken JSON and clients send it back as it came,
    so text that does not parse is passed on as text."""
    try:
        return json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return arguments


def with_system_note(messages: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]
