"""A streamed chat completion put back together: its chunks as the one `chat.completion` object a whole answer is."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

# Text a delta sends in pieces, joined in order; any other field of a delta is whole when it comes.
_JOINED = frozenset({"content", "refusal", "reasoning_content", "arguments", "input", "transcript"})


def _merge(into: dict[str, Any], delta: dict[str, Any]) -> None:
    for key, value in delta.items():
        if value is None:
            into.setdefault(key, None)
        elif key == "data" and isinstance(value, str):
            # audio: each piece is base64 of its own, padded; the whole is the pieces' bytes encoded once
            into[key] = base64.b64encode(base64.b64decode(into.get(key) or "") + base64.b64decode(value)).decode()
        elif key in _JOINED and isinstance(value, str):
            into[key] = (into.get(key) or "") + value
        elif isinstance(value, dict):
            part = into.get(key)
            if not isinstance(part, dict):
                part = into[key] = {}
            _merge(part, value)
        elif key == "tool_calls" and isinstance(value, list):
            _merge_calls(into.setdefault("tool_calls", []), value)
        else:
            into[key] = value


def _merge_calls(calls: list[dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    """Tool-call deltas name their call by `index`, which the whole message does not carry."""
    for delta in deltas:
        # a server that leaves out `index` goes on with the last call until a delta opens another (with an id)
        index = delta.get("index", len(calls) if delta.get("id") or not calls else len(calls) - 1)
        while len(calls) <= index:
            calls.append({})
        _merge(calls[index], {key: value for key, value in delta.items() if key != "index"})


def _merge_logprobs(into: dict[str, Any] | None, logprobs: dict[str, Any]) -> dict[str, Any]:
    merged = dict(into or {})
    for key, entries in logprobs.items():
        if isinstance(entries, list):
            merged[key] = [*(merged.get(key) or []), *entries]
        else:
            merged.setdefault(key, entries)
    return merged


def assembled(chunks: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The `chat.completion` the chunks stream: choices by index with their deltas joined, the envelope's fields
    (id, created, model, system_fingerprint, usage, moderation) as the last chunk that set them said."""
    completion: dict[str, Any] = {}
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for key, value in chunk.items():
            # `obfuscation`: OpenAI's padding of each chunk, no part of the answer
            if key not in ("choices", "object", "obfuscation") and (value is not None or key not in completion):
                completion[key] = value
        for choice in chunk.get("choices") or []:
            index = int(choice.get("index", 0))
            merged = choices.setdefault(
                index, {"index": index, "message": {"role": "assistant"}, "logprobs": None, "finish_reason": None}
            )
            _merge(merged["message"], choice.get("delta") or {})
            if choice.get("logprobs"):
                merged["logprobs"] = _merge_logprobs(merged["logprobs"], choice["logprobs"])
            if choice.get("finish_reason") is not None:
                merged["finish_reason"] = choice["finish_reason"]
    for choice in choices.values():
        message = choice["message"]
        message.setdefault("content", None)
        if message.get("tool_calls") == []:
            del message["tool_calls"]
        # A stream opens every choice with empty content; a whole answer that calls or speaks has none.
        if message["content"] == "" and (
            choice["finish_reason"] == "content_filter"  # withheld
            or any(message.get(key) for key in ("tool_calls", "function_call", "audio"))
        ):
            message["content"] = None
    return {**completion, "object": "chat.completion", "choices": [choices[index] for index in sorted(choices)]}
