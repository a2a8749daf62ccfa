"""Moderated chat completions (the request's `moderation`, after the 2.0.0 spec): the input's messages and the
answers scored by the shipped moderation head, the results in the answer's `moderation` (a last chunk of their own
when streamed), and a `block` policy answering `finish_reason: content_filter` without content. The field goes as
extra_body so that the May-2024 SDK sends it too; answers are read as dicts for the same reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.api.test_moderations import KIND, MODERATION, THREAT
from tests.conftest import E5, Harness, smollm

MODEL = "gpt-4o-mini"
ECHO = [{"role": "user", "content": "What did the note on the car say?"}]


def _note(words: str) -> dict[str, Any]:
    """An answer that says `words` whatever the small model would say: held by a schema to them."""
    schema = {
        "type": "object",
        "properties": {"note": {"type": "string", "enum": [words]}},
        "required": ["note"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "note", "strict": True, "schema": schema}}


THREATENING = _note(THREAT)


@pytest.fixture
async def moderated_oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(), E5, MODERATION])
    return harness


def _moderation(policy: dict[str, Any] | None = None) -> dict[str, Any]:
    asked: dict[str, Any] = {"model": "omni-moderation-latest"}
    if policy is not None:
        asked["policy"] = policy
    return {"moderation": asked}


async def _streamed(harness: Harness, **body: Any) -> list[dict[str, Any]]:
    """A streamed answer's chunks (split on newlines only: a token may hold a character splitlines() breaks at)."""
    async with harness.http() as http:
        response = await http.post("/v1/chat/completions", json={"model": MODEL, "stream": True, **body})
    return [json.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")]


def _content(chunks: list[dict[str, Any]]) -> str:
    return "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])


def _last_finish(chunks: list[dict[str, Any]]) -> str:
    return str([chunk["choices"][0]["finish_reason"] for chunk in chunks if chunk["choices"]][-1])


def _check_results(side: dict[str, Any], count: int) -> list[bool]:
    assert side["type"] == "moderation_results" and side["model"] == "oasis-moderation-e5-small", side
    assert len(side["results"]) == count, side
    for result in side["results"]:
        assert result["type"] == "moderation_result" and result["model"] == side["model"]
        assert set(result["categories"]) == set(result["category_scores"]) >= {"violence", "harassment"}
    return [result["flagged"] for result in side["results"]]


async def test_scored_input_and_answers_come_with_the_answer(moderated_oasis: Harness) -> None:
    reply = await moderated_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": THREAT}],
        n=2,
        temperature=0.8,
        max_tokens=24,
        extra_body=_moderation(),  # no policy: both sides scored
    )
    answer = reply.model_dump()
    assert _check_results(answer["moderation"]["input"], 2) == [False, True]  # each message with text
    answered = [choice for choice in answer["choices"] if choice["message"]["content"]]
    _check_results(answer["moderation"]["output"], len(answered))
    assert all(choice["finish_reason"] in ("stop", "length") for choice in answer["choices"])  # scored, not blocked

    plain = await moderated_oasis.sdk().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": KIND}], max_tokens=4
    )
    assert plain.model_dump().get("moderation") is None  # none asked, none given


async def test_a_blocked_input_is_not_answered(moderated_oasis: Harness) -> None:
    client = moderated_oasis.sdk()
    block = _moderation({"input": {"mode": "block"}})
    reply = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": THREAT}], n=2, max_tokens=16, extra_body=block
    )
    answer = reply.model_dump()
    assert [choice["finish_reason"] for choice in answer["choices"]] == ["content_filter"] * 2
    assert all(choice["message"]["content"] is None for choice in answer["choices"])
    assert answer["usage"]["completion_tokens"] == 0
    assert _check_results(answer["moderation"]["input"], 1) == [True]
    assert answer["moderation"]["output"]["results"] == []

    kind = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": KIND}], max_tokens=8, extra_body=block
    )
    assert kind.choices[0].finish_reason in ("stop", "length") and kind.choices[0].message.content

    chunks = await _streamed(
        moderated_oasis,
        messages=[{"role": "user", "content": THREAT}],
        stream_options={"include_usage": True},
        **block,
    )
    assert _last_finish(chunks) == "content_filter" and not _content(chunks)
    (moderation,) = [chunk["moderation"] for chunk in chunks if chunk.get("moderation")]
    assert _check_results(moderation["input"], 1) == [True]
    assert chunks[-1]["usage"]["completion_tokens"] == 0


async def test_a_flagged_answer_is_withheld_under_block_and_shown_under_score(moderated_oasis: Harness) -> None:
    client = moderated_oasis.sdk()
    scored = await client.chat.completions.create(
        model=MODEL,
        messages=ECHO,
        response_format=THREATENING,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=200,
        extra_body=_moderation(),
    )
    said = scored.choices[0].message.content or ""
    assert _check_results(scored.model_dump()["moderation"]["output"], 1) == [True], said  # the echo is a threat

    block = _moderation({"input": {"mode": "score"}, "output": {"mode": "block"}})
    blocked = await client.chat.completions.create(
        model=MODEL,
        messages=ECHO,
        response_format=THREATENING,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=200,
        logprobs=True,
        extra_body=block,
    )
    choice = blocked.choices[0]
    assert choice.finish_reason == "content_filter" and choice.message.content is None
    assert choice.logprobs is None  # its tokens would spell out what was withheld
    assert _check_results(blocked.model_dump()["moderation"]["output"], 1) == [True]

    # streamed: the answer is held until it is moderated, and never sent
    asked = {"messages": ECHO, "response_format": THREATENING, "temperature": 0, "max_tokens": 200}
    chunks = await _streamed(moderated_oasis, **asked, **block)
    assert _last_finish(chunks) == "content_filter" and not _content(chunks)
    (moderation,) = [chunk["moderation"] for chunk in chunks if chunk.get("moderation")]
    assert _check_results(moderation["output"], 1) == [True] and _check_results(moderation["input"], 1) == [False]

    # streamed and scored: the text as it comes, the moderation in a chunk of its own after it
    chunks = await _streamed(moderated_oasis, **asked, **_moderation())
    assert json.loads(_content(chunks)) == json.loads(said) == {"note": THREAT}
    assert chunks[-1]["choices"] == [] and _check_results(chunks[-1]["moderation"]["output"], 1) == [True]


async def test_an_answer_held_for_moderation_keeps_its_logprobs_and_long_inputs_are_scored_whole(
    moderated_oasis: Harness,
) -> None:
    block = _moderation({"output": {"mode": "block"}})
    chunks = await _streamed(
        moderated_oasis,
        messages=ECHO,
        response_format=_note(KIND),
        temperature=0,
        max_tokens=200,
        logprobs=True,
        **block,
    )
    text = _content(chunks)
    tokens = [
        entry["token"]
        for chunk in chunks
        if chunk["choices"] and chunk["choices"][0]["logprobs"]
        for entry in chunk["choices"][0]["logprobs"]["content"]
    ]
    assert json.loads(text) == {"note": KIND} and "".join(tokens) == text

    # more messages than one moderation takes (32): scored in parts, one result a message
    conversation = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"Line {i} of a chat."} for i in range(41)
    ]
    reply = await moderated_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=conversation,
        max_tokens=4,
        extra_body=_moderation(),  # type: ignore[arg-type]
    )
    assert len(_check_results(reply.model_dump()["moderation"]["input"], 41)) == 41


@pytest.mark.parametrize(
    ("moderation", "status", "param"),
    [
        ({"model": "no-such-moderation-model"}, 404, "moderation.model"),  # as /v1/moderations answers it
        ({"model": MODEL}, 400, "moderation.model"),  # a chat model does no moderation
        (
            {"model": "omni-moderation-latest", "policy": {"input": {"mode": "strict"}}},
            400,
            "moderation.policy.input.mode",
        ),
        ({"policy": {"input": {"mode": "block"}}}, 400, "moderation.model"),
    ],
)
async def test_bad_moderation_requests_are_errors_naming_the_param(
    moderated_oasis: Harness, moderation: Any, status: int, param: str
) -> None:
    async with moderated_oasis.http() as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": KIND}], "moderation": moderation},
        )
    assert response.status_code == status and response.json()["error"]["param"] == param, response.text


async def test_messages_without_text_are_moderated_by_the_model_named(moderated_oasis: Harness) -> None:
    """Nothing to score in the input still names the moderation model as served, and a model that does no
    moderation is refused before anything is generated, as it is when there is text."""
    silent = [{"role": "user", "content": ""}]
    reply = await moderated_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=silent,
        max_tokens=4,
        extra_body=_moderation(),  # type: ignore[arg-type]
    )
    assert _check_results(reply.model_dump()["moderation"]["input"], 0) == []
    async with moderated_oasis.http() as http:
        for model, status in (("no-such-moderation-model", 404), (MODEL, 400)):
            for stream in (False, True):
                response = await http.post(
                    "/v1/chat/completions",
                    json={"model": MODEL, "messages": silent, "stream": stream, "moderation": {"model": model}},
                )
                assert response.status_code == status, response.text
                assert response.json()["error"]["param"] == "moderation.model", response.text
