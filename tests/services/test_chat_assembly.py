"""A streamed chat completion put back together is the whole answer: what a stored streamed completion shows."""

from __future__ import annotations

import base64
from typing import Any

from oasis.services.chat.assembly import assembled

ENVELOPE = {
    "id": "chatcmpl-1",
    "created": 1,
    "model": "m",
    "system_fingerprint": "fp",
    "object": "chat.completion.chunk",
}


def _chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
    return {**ENVELOPE, "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}


def test_text_of_two_choices_joins_in_order_with_logprobs_and_usage() -> None:
    token = {"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}
    chunks = [
        _chunk(0, {"role": "assistant", "content": ""}),
        _chunk(1, {"role": "assistant", "content": ""}),
        _chunk(0, {"content": "Hel"}, logprobs={"content": [token]}),
        _chunk(1, {"content": "Bye"}),
        _chunk(0, {"content": "lo"}, logprobs={"content": [token]}),
        _chunk(0, {}, "stop"),
        _chunk(1, {}, "length"),
        {**ENVELOPE, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}},
    ]
    completion = assembled(chunks)
    assert completion["object"] == "chat.completion" and completion["id"] == "chatcmpl-1"
    assert completion["usage"]["total_tokens"] == 7 and completion["system_fingerprint"] == "fp"
    first, second = completion["choices"]
    assert first["message"] == {"role": "assistant", "content": "Hello"} and first["finish_reason"] == "stop"
    assert first["logprobs"] == {"content": [token, token]}
    assert second["message"]["content"] == "Bye" and second["finish_reason"] == "length"
    assert second["logprobs"] is None


def test_calls_streamed_in_pieces_are_whole_calls_without_their_index() -> None:
    chunks = [
        _chunk(0, {"role": "assistant", "content": ""}),
        _chunk(
            0,
            {
                "tool_calls": [
                    {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}
                ]
            },
        ),
        _chunk(0, {"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}),
        _chunk(
            0, {"tool_calls": [{"index": 1, "id": "call_b", "type": "custom", "custom": {"name": "g", "input": ""}}]}
        ),
        _chunk(0, {"tool_calls": [{"index": 0, "function": {"arguments": " 1}"}}]}),
        _chunk(0, {"tool_calls": [{"index": 1, "custom": {"input": "free text"}}]}),
        _chunk(0, {}, "tool_calls"),
    ]
    (choice,) = assembled(chunks)["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant",
        "content": None,  # a whole answer that calls has no content, though the stream opened it empty
        "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
            {"id": "call_b", "type": "custom", "custom": {"name": "g", "input": "free text"}},
        ],
    }


def test_a_spoken_answer_joins_its_transcript_and_its_audio_bytes() -> None:
    pieces = [b"RIFF\x01", b"abc", b"\x00\xff"]  # each piece's base64 is padded on its own
    chunks = [
        _chunk(0, {"role": "assistant", "content": ""}),
        _chunk(0, {"audio": {"id": "audio_1", "transcript": "Hello "}}),
        _chunk(0, {"audio": {"id": "audio_1", "transcript": "there"}}),
        *(_chunk(0, {"audio": {"id": "audio_1", "data": base64.b64encode(piece).decode()}}) for piece in pieces),
        _chunk(0, {"audio": {"id": "audio_1", "expires_at": 99}}),
        _chunk(0, {}, "stop"),
    ]
    message = assembled(chunks)["choices"][0]["message"]
    assert message["content"] is None and message["audio"]["transcript"] == "Hello there"
    assert base64.b64decode(message["audio"]["data"], validate=True) == b"".join(pieces)
    assert message["audio"]["id"] == "audio_1" and message["audio"]["expires_at"] == 99


def test_a_withheld_answer_has_no_content_and_padding_fields_are_left_out() -> None:
    chunks = [
        {**_chunk(0, {"role": "assistant", "content": ""}), "obfuscation": "xyz"},
        _chunk(0, {}, "content_filter"),
    ]
    completion = assembled(chunks)
    assert "obfuscation" not in completion
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": None}


def test_call_deltas_without_an_index_go_on_with_the_call_they_continue() -> None:
    opening = {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": ""}}
    chunks = [
        _chunk(0, {"role": "assistant", "content": ""}),
        _chunk(0, {"tool_calls": [opening]}),
        _chunk(0, {"tool_calls": [{"function": {"arguments": '{"x"'}}]}),
        _chunk(0, {"tool_calls": [{"function": {"arguments": ": 1}"}}]}),
        _chunk(0, {"tool_calls": [{**opening, "id": "call_b", "function": {"name": "g", "arguments": "{}"}}]}),
        _chunk(0, {}, "tool_calls"),
    ]
    calls = assembled(chunks)["choices"][0]["message"]["tool_calls"]
    assert [(call["id"], call["function"]["arguments"]) for call in calls] == [("call_a", '{"x": 1}'), ("call_b", "{}")]


def test_a_legacy_function_call_and_reasoning_are_joined() -> None:
    chunks = [
        _chunk(0, {"role": "assistant", "content": ""}),
        _chunk(0, {"reasoning_content": "Let me "}),
        _chunk(0, {"reasoning_content": "think."}),
        _chunk(0, {"function_call": {"name": "f", "arguments": ""}}),
        _chunk(0, {"function_call": {"arguments": "{}"}}),
        _chunk(0, {}, "function_call"),
    ]
    message = assembled(chunks)["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": None,
        "reasoning_content": "Let me think.",
        "function_call": {"name": "f", "arguments": "{}"},
    }
