"""Chat completions through the official SDK, on the real llama.cpp engine and the shipped SmolLM2 model."""

from __future__ import annotations

import asyncio
import base64
import collections
import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from pydantic import BaseModel

from tests.conftest import Harness, smollm
from tests.server_process import oasis_env, oasis_server
from tests.services.test_text_extraction import make_pdf
from tests.test_pattern_grammar import PATTERNS

MODEL = "gpt-4o-mini"
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


async def test_answer_has_openai_shape(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=12)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert reply.model == MODEL and reply.system_fingerprint and reply.created > 0
    (choice,) = reply.choices
    assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # a model that does not think spent none of its tokens on reasoning (a dict: older SDKs keep it unparsed)
    assert reply.usage.model_dump()["completion_tokens_details"]["reasoning_tokens"] == 0


async def test_max_tokens_and_max_completion_tokens_cut_with_length(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    story = [{"role": "user", "content": "Write a long story about a dragon."}]
    short = await client.chat.completions.create(model=MODEL, messages=story, max_tokens=7, temperature=0)
    assert short.choices[0].finish_reason == "length" and short.usage and short.usage.completion_tokens == 7
    newer = await client.chat.completions.create(
        model=MODEL, messages=story, temperature=0, extra_body={"max_completion_tokens": 4}
    )
    assert newer.usage and newer.usage.completion_tokens == 4


async def test_streamed_text_equals_whole_text_at_temperature_zero(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    whole = await client.chat.completions.create(model=MODEL, messages=CAPITAL, temperature=0, max_tokens=25)
    stream = await client.chat.completions.create(
        model=MODEL, messages=CAPITAL, temperature=0, max_tokens=25, stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert all(c.object == "chat.completion.chunk" for c in chunks)


async def test_stream_wire_format_ends_with_done_and_usage(chat_oasis: Harness) -> None:
    body = {
        "model": MODEL,
        "messages": CAPITAL,
        "max_tokens": 6,
        "ignore_eos": True,  # sampling at temperature 1 may end sooner; the count checked is then exact
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with chat_oasis.http() as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [line[len("data: ") :] for line in response.text.split("\n\n") if line]
    assert frames[-1] == "[DONE]"
    events = [json.loads(frame) for frame in frames[:-1]]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 6
    assert all(event["usage"] is None for event in events[:-1])


async def test_logprob_tokens_concatenate_to_the_content(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL, messages=CAPITAL, max_tokens=15, logprobs=True, top_logprobs=3, temperature=0
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    assert "".join(item.token for item in choice.logprobs.content) == choice.message.content
    for item in choice.logprobs.content:
        assert item.logprob <= 0 and len(item.top_logprobs) == 3
        assert item.top_logprobs[0].logprob >= item.top_logprobs[-1].logprob
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob)  # greedy picks the likeliest


async def test_json_mode_output_parses(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe a cat as JSON with a name and an age."}],
        response_format={"type": "json_object"},
        max_tokens=80,
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


async def test_json_schema_output_matches_the_schema(chat_oasis: Harness) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Name a big city and its population."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}},
        max_tokens=60,
        temperature=0,
    )
    parsed = json.loads(reply.choices[0].message.content or "")
    assert set(parsed) == {"city", "population"}
    assert isinstance(parsed["city"], str) and isinstance(parsed["population"], int)


class _Place(BaseModel):
    city: str


class _Person(BaseModel):
    name: str
    home: _Place
    friends: list[_Person] = []
    note: Any = None  # `{"title": "Note", "default": null}`: any value


async def test_a_recursive_models_schema_holds_the_output(chat_oasis: Harness) -> None:
    """A pydantic model that contains itself puts its `$ref` at the root beside its `$defs` (as `parse` and
    instructor send it), and an `Any` field is a schema of annotations alone: the output is held to it (both were
    400s before)."""
    schema = _Person.model_json_schema()
    assert "$ref" in schema and "$defs" in schema
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Describe Ada, who lives in London, and her friend Bob."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
        max_tokens=150,
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "stop"
    _Person.model_validate_json(reply.choices[0].message.content or "")


async def test_strings_in_structured_outputs_keep_to_their_patterns(chat_oasis: Harness) -> None:
    """A `pattern` holds in what the model writes: `\\d` is a digit (llama-cpp-python's converter wrote a literal
    `d`, and lost the repetition)."""
    schema = {
        "type": "object",
        "properties": {
            "phone": {"type": "string", "pattern": r"^\d{3}-\d{4}$"},
            "code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"},
        },
        "required": ["phone", "code"],
        "additionalProperties": False,
    }
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Make up a phone number and a product code."}],
        response_format={"type": "json_schema", "json_schema": {"name": "contact", "schema": schema, "strict": True}},
        max_tokens=60,
        temperature=0,
    )
    parsed = json.loads(reply.choices[0].message.content or "")
    engine: Any = chat_oasis.container.registry.engine(MODEL)
    for pattern in PATTERNS:  # every grammar the converter's own tests cover, parsed by llama.cpp
        engine.check_schema({"type": "string", "pattern": pattern})
    assert re.fullmatch(r"\d{3}-\d{4}", parsed["phone"]) and re.fullmatch(r"[A-Z]{2}[0-9]{3}", parsed["code"]), parsed


async def test_numbers_in_structured_outputs_and_tool_calls_keep_to_their_bounds(chat_oasis: Harness) -> None:
    """`minimum`, `maximum` and their exclusive forms (pydantic's ge, le, gt, lt) hold in what the model writes, as
    OpenAI's structured outputs keep them: the small model wrote ratings of 15 and confidences of 4.8 before."""
    schema = {
        "type": "object",
        "properties": {
            "rating": {"type": "integer", "minimum": 1, "maximum": 5},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "votes": {"type": "integer", "exclusiveMinimum": 100},
            "change": {"anyOf": [{"type": "number", "minimum": -1, "exclusiveMaximum": 0}, {"type": "null"}]},
        },
        "required": ["rating", "confidence", "votes", "change"],
        "additionalProperties": False,
    }
    client = chat_oasis.sdk()
    question = [{"role": "user", "content": "Rate the film Jaws from 1 to 5, say how sure you are, and its votes."}]
    answers = []
    for seed in range(5):
        reply = await client.chat.completions.create(
            model=MODEL,
            messages=question,  # type: ignore[arg-type]
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "rating", "schema": schema, "strict": True},
            },
            max_tokens=150,
            temperature=1.0,
            seed=seed,
        )
        assert reply.choices[0].finish_reason == "stop", reply.choices[0]
        answers.append(json.loads(reply.choices[0].message.content or ""))
        called = await client.chat.completions.create(
            model=MODEL,
            messages=question,  # type: ignore[arg-type]
            tools=[{"type": "function", "function": {"name": "rate", "parameters": schema, "strict": True}}],
            tool_choice={"type": "function", "function": {"name": "rate"}},
            max_tokens=150,
            temperature=1.0,
            seed=seed,
        )
        (call,) = called.choices[0].message.tool_calls or []
        answers.append(json.loads(call.function.arguments))  # type: ignore[union-attr]
    for answer in answers:
        assert 1 <= answer["rating"] <= 5 and isinstance(answer["rating"], int), answer
        assert 0 <= answer["confidence"] <= 1 and answer["votes"] > 100, answer
        assert answer["change"] is None or -1 <= answer["change"] < 0, answer


async def test_schemas_with_bounds_in_the_thousands_are_served_not_crashed_on(chat_oasis: Harness) -> None:
    # llama.cpp's grammar parser crashed the whole process on such bounds (common in agents' tool schemas).
    schema = {
        "type": "object",
        "properties": {
            "summary": {"type": "string", "maxLength": 65536},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 2000}, "maxItems": 5000},
            "code": {"type": "string", "maxLength": 8},
        },
        "required": ["summary", "tags", "code"],
    }
    client = chat_oasis.sdk()
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Summarise the weather."}],
        response_format={"type": "json_schema", "json_schema": {"name": "report", "schema": schema}},
        max_tokens=120,
        temperature=0,
    )
    if reply.choices[0].finish_reason == "stop":
        parsed = json.loads(reply.choices[0].message.content or "")
        assert set(parsed) == {"summary", "tags", "code"} and len(parsed["code"]) <= 8  # small bounds still hold
    forced = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Report the weather."}],
        tools=[{"type": "function", "function": {"name": "report", "parameters": schema}}],
        tool_choice="required",
        max_tokens=60,
    )
    assert forced.choices[0].finish_reason in ("tool_calls", "length")
    assert (await client.models.list()).data  # the server is still up


async def test_structured_output_never_holds_raw_control_characters(chat_oasis: Harness) -> None:
    # JSON forbids a raw newline inside a string; a model leaning hard towards one must still write JSON that a
    # strict parser reads (llama-cpp-python's schema grammar let it through: json.loads then failed).
    newlines = {"198": 40, "1116": 40}  # SmolLM2's "\n" and "\n\n"
    schema = {"type": "object", "properties": {"note": {"type": "string", "maxLength": 24}}, "required": ["note"]}
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Write a two-line note about rain."}],
        response_format={"type": "json_schema", "json_schema": {"name": "note", "schema": schema}},
        logit_bias=newlines,
        max_tokens=120,
        temperature=0,
    )
    assert reply.choices[0].finish_reason == "stop"
    assert set(json.loads(reply.choices[0].message.content or "")) == {"note"}


async def test_n_choices_are_indexed(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().chat.completions.create(model=MODEL, messages=CAPITAL, n=3, max_tokens=5)
    assert [choice.index for choice in reply.choices] == [0, 1, 2]
    assert reply.usage and 3 <= reply.usage.completion_tokens <= 15
    stream = await chat_oasis.sdk().chat.completions.create(
        model=MODEL, messages=CAPITAL, n=2, max_tokens=5, stream=True
    )
    finished = [c.choices[0].index async for c in stream if c.choices and c.choices[0].finish_reason]
    assert sorted(finished) == [0, 1]


async def test_n_choices_read_a_long_prompt_once(chat_oasis: Harness) -> None:
    """The n choices of one request share the prompt's KV cache: the prompt is decoded once and copied to the
    other slots, and every greedy choice is the answer a single request gets."""
    engine: Any = chat_oasis.container.registry.engine(MODEL)
    notes = " ".join(f"Note {i}: the lighthouse keeper counted {i} ships today." for i in range(12))
    messages = [{"role": "system", "content": notes}, {"role": "user", "content": "Summarise the notes."}]
    client = chat_oasis.sdk()
    single = await client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=12)
    assert single.usage and single.usage.prompt_tokens > 150
    # Evict the prompt from every slot, so that the next request has to read it again.
    await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], n=4, temperature=0, max_tokens=1
    )
    decoded_before, cached_before = engine.prompt_tokens_decoded, engine.prompt_tokens_cached
    reply = await client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=12, n=4)
    assert [choice.message.content for choice in reply.choices] == [single.choices[0].message.content] * 4
    decoded = engine.prompt_tokens_decoded - decoded_before
    cached = engine.prompt_tokens_cached - cached_before
    prompt_tokens = single.usage.prompt_tokens
    assert decoded + cached == 4 * prompt_tokens
    # Read once; each other choice decodes only the last prompt token (its logits start the answer).
    assert decoded <= prompt_tokens + 3


async def test_usage_counts_the_prompt_tokens_read_from_the_cache(chat_oasis: Harness) -> None:
    """`usage.prompt_tokens_details.cached_tokens`, as OpenAI reports its prompt caching: a conversation sent
    again is read from the slot that holds it, all but the last token (whose logits start the answer)."""
    client = chat_oasis.sdk()
    notes = " ".join(f"Note {i}: the lighthouse keeper counted {i} ships today." for i in range(6))
    messages: Any = [{"role": "system", "content": notes}, {"role": "user", "content": "Summarise the notes."}]
    first = await client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=4)
    assert first.usage and first.usage.model_dump()["prompt_tokens_details"]["cached_tokens"] == 0  # a fresh engine
    again = await client.chat.completions.create(model=MODEL, messages=messages, temperature=0, max_tokens=4)
    assert again.usage and again.usage.prompt_tokens == first.usage.prompt_tokens
    assert again.usage.model_dump()["prompt_tokens_details"]["cached_tokens"] == first.usage.prompt_tokens - 1
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=messages,
        temperature=0,
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    last = [chunk async for chunk in stream][-1]
    assert (
        last.usage
        and last.usage.model_dump()["prompt_tokens_details"]["cached_tokens"] == first.usage.prompt_tokens - 1
    )


async def test_same_seed_gives_the_same_output(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    story = [{"role": "user", "content": "Tell me something surprising."}]
    first, second = [
        (await client.chat.completions.create(model=MODEL, messages=story, seed=1234, max_tokens=20))
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert first == second


async def test_a_seed_with_n_gives_different_choices_and_the_same_answer_again(chat_oasis: Harness) -> None:
    """OpenAI's n choices are separate samples, seed or not; the seed makes the whole answer repeat. Each choice
    drew the same random numbers from the same logits, so all n were one text. Seed -1 (llama.cpp's "random")
    repeats too, through the llama.cpp sampler chain that top_p takes."""
    client = chat_oasis.sdk()
    story = [{"role": "user", "content": "Tell me something surprising."}]
    for seed, top_p in ((1234, 1.0), (-1, 0.95)):
        answers = [
            [
                choice.message.content
                for choice in (
                    await client.chat.completions.create(
                        model=MODEL, messages=story, seed=seed, n=4, max_tokens=20, temperature=1.0, top_p=top_p
                    )
                ).choices
            ]
            for _ in range(2)
        ]
        assert answers[0] == answers[1]
        assert len(set(answers[0])) > 1, answers[0]


async def test_stop_strings_end_the_answer_and_never_appear(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    counting = [{"role": "user", "content": "Count from 1 to 20, separated by commas."}]
    free = await client.chat.completions.create(model=MODEL, messages=counting, temperature=0, max_tokens=60)
    text = free.choices[0].message.content or ""
    assert "5" in text
    stopped = await client.chat.completions.create(
        model=MODEL, messages=counting, temperature=0, max_tokens=60, stop=["5"]
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index("5")]


async def test_sixteen_concurrent_requests_all_succeed(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    replies = await asyncio.gather(
        *(
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"Say the number {i}."}], max_tokens=8
            )
            for i in range(16)
        )
    )
    assert all(reply.choices[0].message.content for reply in replies)


def test_a_client_that_leaves_frees_its_slot(tmp_path: Path, postgres_url: str | None) -> None:
    """Over a real socket: a streaming client and a non-streaming one each leave mid-answer; with one slot,
    the next request only finishes quickly if both abandoned 1900-token answers stopped."""
    config = tmp_path / "oasis.yaml"
    config.write_text(yaml.safe_dump({"defaults": False, "models": [smollm(parallel=1)]}))
    endless = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
        "max_tokens": 1900,
        "logit_bias": {"0": -100, "2": -100},  # no end-of-text token: only the limit or a cancel ends it
    }
    with oasis_server(tmp_path / "data", oasis_env(postgres_url), "--config", str(config)) as server:
        with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json={**endless, "stream": True}) as r:
            next(r.iter_lines())  # the answer has started; now leave
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.base_url}/v1/chat/completions", json=endless, timeout=1.5)
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=15)
        quick = client.chat.completions.create(
            model=MODEL, messages=CAPITAL, max_tokens=3, extra_body={"ignore_eos": True}
        )
        assert quick.usage and quick.usage.completion_tokens == 3


async def test_a_stream_closed_at_its_first_chunk_frees_its_slot(start_oasis: Any) -> None:
    """A client gone before the first token: the stream is closed at its role chunk, and its sequence must stop
    there, not generate its 1900 tokens while the one slot keeps everyone else waiting."""
    from oasis.protocol.extensions import ChatCompletionRequest

    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(parallel=1)])
    endless = ChatCompletionRequest.model_validate(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Write a very long story about the sea."}],
            "max_tokens": 1900,
            "logit_bias": {"0": -100, "2": -100},
            "stream": True,
        }
    )
    events = harness.container.chat.stream(endless)
    first = await anext(events)
    assert first["choices"][0]["delta"]["role"] == "assistant"
    await events.aclose()  # type: ignore[attr-defined]
    quick = harness.sdk().chat.completions.create(
        model=MODEL, messages=CAPITAL, max_tokens=3, extra_body={"ignore_eos": True}
    )
    reply = await asyncio.wait_for(quick, timeout=10)
    assert reply.usage and reply.usage.completion_tokens == 3


async def test_a_full_queue_answers_429_with_retry_after(start_oasis: Any) -> None:
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(parallel=1, max_queue=1)])
    client = harness.sdk()
    results = await asyncio.gather(
        *(client.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=30) for _ in range(4)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert refused and all(r.response.headers["retry-after"] == "1" for r in refused)
    assert any(not isinstance(r, Exception) for r in results)
    with pytest.raises(openai.BadRequestError) as never_fits:  # more choices than the queue holds: not a 429
        await client.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=3, n=2)
    assert never_fits.value.body["param"] == "n"  # type: ignore[index]


@pytest.mark.parametrize(
    ("change", "status", "param"),
    [
        ({"messages": []}, 400, "messages"),
        ({"temperature": 3}, 400, "temperature"),
        ({"n": 0}, 400, "n"),
        ({"top_p": 1.5}, 400, "top_p"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
        # fields named as OpenAI names them: no role in the path, the wrong part's own field
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]},
            400,
            "messages[1].tool_call_id",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            400,
            "messages[0].content[0].text",
        ),
        ({"tool_choice": {"type": "function"}}, 400, "tool_choice.function"),
        ({"top_logprobs": 2}, 400, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, 400, "top_logprobs"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"max_tokens": 100_000}, 400, "max_tokens"),
        ({"logit_bias": {"999999": 5}}, 400, "logit_bias"),  # past the vocabulary
        ({"stream_options": {"include_usage": True}}, 400, "stream_options"),  # without stream, as OpenAI
        # long enough to be rendered and tokenized off the event loop: its errors come back the same
        ({"messages": [{"role": "user", "content": "word " * 20_000}]}, 400, "messages"),
        ({"logit_bias": {"-3": 5}}, 400, "logit_bias"),
        ({"logit_bias": {"--5": 5}}, 400, "logit_bias"),  # not a number, though lstrip("-") and isdigit said so
        ({"model": "no-such-model"}, 404, "model"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            },
            400,
            "messages[0].content",
        ),
    ],
)
async def test_bad_requests_get_envelopes(chat_oasis: Harness, change: dict[str, Any], status: int, param: str) -> None:
    body = {"model": MODEL, "messages": CAPITAL, "max_tokens": 3, **change}
    async with chat_oasis.http() as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


async def test_audio_parts_are_refused_by_name_by_a_text_model(chat_oasis: Harness) -> None:
    """A part current SDKs send that a local text model cannot read: a 400 that says which, not a complaint that
    the content should have been a string."""
    for part, code in (
        (
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            "input_audio_parts_unsupported",
        ),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            await chat_oasis.sdk().chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}],  # type: ignore[list-item]
                max_tokens=3,
            )
        assert (refused.value.code, refused.value.param) == (code, "messages[0].content"), refused.value.body


async def test_a_file_part_is_read_into_the_prompt(chat_oasis: Harness) -> None:
    """A file content part, uploaded (`file_id`, purpose `user_data` as OpenAI's guide has it) or sent inline
    (`file_data`: a PDF as a base64 data URL), reaches a local model as the file's text: the prompt grows by it."""
    client = chat_oasis.sdk()
    notes = "The code word for the launch is PAPAYA. " * 30
    uploaded = await client.files.create(file=("notes.txt", io.BytesIO(notes.encode())), purpose="user_data")  # type: ignore[arg-type]
    pdf = base64.b64encode(make_pdf(["The code word for the launch is PAPAYA."] * 30)).decode()
    question = {"type": "text", "text": "What is the code word?"}

    async def prompt_tokens(*parts: dict[str, Any]) -> int:
        reply = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [*parts, question]}],
            max_tokens=1,  # type: ignore[list-item]
        )
        assert reply.usage is not None
        return reply.usage.prompt_tokens

    alone = await prompt_tokens()
    by_id = await prompt_tokens({"type": "file", "file": {"file_id": uploaded.id}})
    inline = await prompt_tokens({"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf}"}})
    named = await prompt_tokens({"type": "file", "file": {"file_data": pdf, "filename": "launch.pdf"}})
    words = len(notes.split())
    assert by_id > alone + words and inline > alone + words and named > alone + words, (alone, by_id, inline, named)


@pytest.mark.parametrize(
    ("file", "param", "code"),
    [
        ({"file_id": "file-missing"}, "messages[0].content[0].file.file_id", None),
        ({"file_data": "not base64!", "filename": "a.txt"}, "messages[0].content[0].file.file_data", None),
        (
            {"file_data": base64.b64encode(b"MZ").decode(), "filename": "tool.exe"},
            "messages[0].content[0].file",
            "unsupported_file",
        ),
        ({"file_data": base64.b64encode(b"hi").decode()}, "messages[0].content[0].file.filename", None),
        # more text than any context here holds: refused as it is read, not held whole first
        (
            {"file_data": base64.b64encode(b"a" * 2_000_001).decode(), "filename": "big.txt"},
            "messages[0].content[0].file",
            None,
        ),
        (
            {"file_data": base64.b64encode(b"%PDF-1.4 broken").decode(), "filename": "a.pdf"},
            "messages[0].content[0].file",
            "invalid_file",
        ),
    ],
)
async def test_a_file_part_that_cannot_be_read_is_a_400_naming_it(
    chat_oasis: Harness, file: dict[str, str], param: str, code: str | None
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await chat_oasis.sdk().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": [{"type": "file", "file": file}]}],
            max_tokens=1,  # type: ignore[list-item, typeddict-item]
        )
    assert (refused.value.param, refused.value.code) == (param, code), refused.value.body


async def test_a_lone_surrogate_in_a_message_or_prompt_is_a_400_and_the_engine_keeps_serving(
    chat_oasis: Harness,
) -> None:
    # JavaScript's JSON.stringify writes a lone surrogate this way: valid JSON, but no text a model can read.
    chat = b'{"model": "%s", "max_tokens": 3, "messages": [{"role": "user", "content": "hi \\ud83d"}]}' % MODEL.encode()
    completion = b'{"model": "gpt-3.5-turbo-instruct", "max_tokens": 3, "prompt": ["fine", "\\udfff"]}'
    headers = {"content-type": "application/json"}
    async with chat_oasis.http() as http:
        chat_reply = await http.post("/v1/chat/completions", content=chat, headers=headers)
        completion_reply = await http.post("/v1/completions", content=completion, headers=headers)
    assert chat_reply.status_code == 400, chat_reply.text
    assert chat_reply.json()["error"]["param"] == "messages[0].content"
    assert completion_reply.status_code == 400, completion_reply.text
    assert completion_reply.json()["error"]["param"] == "prompt[1]"
    reply = await chat_oasis.sdk().chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=3)  # type: ignore[arg-type]
    assert reply.choices[0].message.content


async def test_ignore_eos_runs_to_max_tokens(chat_oasis: Harness) -> None:
    """vLLM's `ignore_eos` extension: only the length limit ends the answer."""
    client = chat_oasis.sdk()
    hello = [{"role": "user", "content": "Say hi."}]
    natural = await client.chat.completions.create(model=MODEL, messages=hello, temperature=0, max_tokens=200)
    assert natural.choices[0].finish_reason == "stop"
    forced = await client.chat.completions.create(
        model=MODEL, messages=hello, temperature=0, max_tokens=200, extra_body={"ignore_eos": True}
    )
    assert forced.choices[0].finish_reason == "length" and forced.usage and forced.usage.completion_tokens == 200


async def test_json_mode_with_ignore_eos_ends_where_the_document_does(chat_oasis: Harness) -> None:
    """Once the JSON document is complete only the end-of-generation token may follow, and `ignore_eos` bans it: no
    token is possible, so the answer ends there. llama.cpp's draw used to pick a token anyway, its grammar threw on
    it, and the uncaught C++ exception aborted the whole server."""
    client = chat_oasis.sdk()
    for temperature in (0, 0.7):
        reply = await client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Describe a cat as JSON with a name and an age."}],
            response_format={"type": "json_object"},
            max_tokens=300,
            temperature=temperature,
            seed=7,  # one answer that completes its document well within the 300 tokens
            extra_body={"ignore_eos": True},
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", choice
        assert isinstance(json.loads(choice.message.content or ""), dict)
        assert reply.usage and reply.usage.completion_tokens < 300


async def test_a_schema_that_cannot_be_followed_is_a_400_and_the_engine_keeps_serving(chat_oasis: Harness) -> None:
    """A schema the grammar converter refuses (an unknown type) or that no document satisfies (an empty enum) is
    refused when the request comes; it used to be found on the engine's scheduler thread, which it ended, and every
    later request hung."""
    client = chat_oasis.sdk()
    no_integer = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 5, "maximum": 1}}}
    for schema in (
        {"type": "strange"},
        {"type": "string", "pattern": "(?=a)b"},  # a lookahead: no grammar form
        {"type": "object", "properties": {"a": {"enum": []}}, "required": ["a"]},
        {**no_integer, "required": ["a"]},
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model=MODEL,
                messages=CAPITAL,
                max_tokens=20,
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            )
        assert refused.value.code == "invalid_json_schema" and "Invalid JSON Schema" in refused.value.message
        assert refused.value.param == "response_format.json_schema.schema"
    forced_tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "strange"}}}
    with pytest.raises(openai.BadRequestError) as refused:
        await client.chat.completions.create(
            model=MODEL,
            messages=CAPITAL,
            max_tokens=20,
            tools=[forced_tool],  # type: ignore[list-item]
            tool_choice={"type": "function", "function": {"name": "f"}},
        )
    assert refused.value.code == "invalid_json_schema" and refused.value.param == "tools"
    reply = await asyncio.wait_for(
        client.chat.completions.create(
            model=MODEL, messages=CAPITAL, max_tokens=30, temperature=0, response_format={"type": "json_object"}
        ),
        timeout=60,
    )
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


async def test_a_temperature_too_small_to_divide_by_answers_as_temperature_0(chat_oasis: Harness) -> None:
    """1e-44 is a valid temperature (0 to 2), but the logits divided by it overflow to infinities: in JSON mode the
    draw then fell on a token the grammar forbids and the server aborted; with top_p the token was arbitrary. Below
    1e-5 the draw is greedy, as vLLM's is."""
    client = chat_oasis.sdk()
    story = [{"role": "user", "content": "Describe a cat as JSON with a name and an age."}]
    for extra in ({"response_format": {"type": "json_object"}}, {"top_p": 0.5}, {}):
        answers = []
        for temperature in (0, 7.874741580114754e-44, 1e-6):
            reply = await client.chat.completions.create(
                model=MODEL, messages=story, max_tokens=40, temperature=temperature, **extra
            )
            answers.append(reply.choices[0].message.content)
        assert answers[1] == answers[0] and answers[2] == answers[0], (extra, answers)


async def test_presence_and_frequency_penalties_make_the_reply_repeat_itself_less(chat_oasis: Harness) -> None:
    """OpenAI's penalties lower a token's logit once it has appeared in the reply (presence) and per appearance
    (frequency). They used to do nothing: llama.cpp read their window of -1 tokens as none."""
    client = chat_oasis.sdk()
    ask = [{"role": "user", "content": "Write a list of twenty animals."}]

    async def most_repeated(**penalty: float) -> tuple[int, str]:
        """How often the reply's most frequent word comes (its layout, a list or a table, differs between CPUs and
        with the threads decoding: greedy output is only as exact as the floating point). Case counts: the
        penalties act on tokens, and "Bird" is not " bird"."""
        reply = await client.chat.completions.create(
            model=MODEL, messages=ask, temperature=0, max_tokens=100, **penalty
        )
        text = reply.choices[0].message.content or ""
        return max(collections.Counter(re.findall(r"[A-Za-z]+", text)).values()), text

    plain, said = await most_repeated()
    assert plain >= 6, said  # greedy, the 135M model says one word over and over within 100 tokens
    for penalty in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}):
        penalized, said = await most_repeated(**penalty)
        assert penalized < plain / 2, (penalty, said)


async def test_a_negative_seed_repeats_its_answer(chat_oasis: Harness) -> None:
    """OpenAI's seeds are any 64-bit integer. numpy's generator refuses one below 0, and a negative seed ended the
    engine's scheduler thread: that request and every later one hung."""
    client = chat_oasis.sdk()
    answers = []
    for _ in range(2):
        reply = await asyncio.wait_for(
            client.chat.completions.create(model=MODEL, messages=CAPITAL, max_tokens=16, temperature=1.0, seed=-7),
            timeout=60,
        )
        answers.append(reply.choices[0].message.content)
    assert answers[0] and answers[0] == answers[1]
