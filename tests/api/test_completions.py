"""Legacy completions and the tokenizer extensions, through the official SDK on the real engine."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import Harness, smollm
from tests.server_process import oasis_env, oasis_server

MODEL = "gpt-3.5-turbo-instruct"
PROMPT = "The capital of France is"


async def test_answer_has_openai_shape_and_default_length(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().completions.create(model=MODEL, prompt="Once upon a time", temperature=0)
    assert reply.id.startswith("cmpl-") and reply.object == "text_completion" and reply.model == MODEL
    (choice,) = reply.choices
    assert choice.index == 0 and choice.text and choice.finish_reason in ("stop", "length")
    assert reply.usage and 0 < reply.usage.completion_tokens <= 16  # OpenAI's default max_tokens here is 16


async def test_every_prompt_form_gives_the_same_greedy_text(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    async with chat_oasis.http() as http:
        tokens = (await http.post("/tokenize", json={"prompt": PROMPT})).json()["tokens"]
    as_text = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, temperature=0)
    as_tokens = await client.completions.create(model=MODEL, prompt=tokens, max_tokens=6, temperature=0)
    assert as_tokens.choices[0].text == as_text.choices[0].text
    many = await client.completions.create(
        model=MODEL, prompt=[PROMPT, "One, two, three,"], max_tokens=6, temperature=0, n=2
    )
    assert [choice.index for choice in many.choices] == [0, 1, 2, 3]
    assert many.choices[0].text == many.choices[1].text == as_text.choices[0].text
    token_lists = await client.completions.create(model=MODEL, prompt=[tokens, tokens], max_tokens=6, temperature=0)
    assert [c.text for c in token_lists.choices] == [as_text.choices[0].text] * 2
    assert token_lists.usage and token_lists.usage.prompt_tokens == 2 * len(tokens)


async def test_logprobs_line_up_with_the_text(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, logprobs=3
    )
    choice = reply.choices[0]
    assert choice.logprobs is not None
    lp = choice.logprobs
    assert "".join(lp.tokens or []) == choice.text
    assert len(lp.tokens or []) == len(lp.token_logprobs or []) == len(lp.top_logprobs or []) == 8
    assert all(value is not None and value <= 0 for value in lp.token_logprobs or [])
    offsets = lp.text_offset or []
    assert offsets[0] == len(PROMPT)
    assert all(b - a == len(t) for a, b, t in zip(offsets, offsets[1:], lp.tokens or [], strict=False))
    for token, top in zip(lp.tokens or [], lp.top_logprobs or [], strict=True):
        assert len(top) == 3 and max(top, key=top.get) == token  # greedy: the chosen token is the likeliest


async def test_echo_and_scoring_the_prompt(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    echoed = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0, echo=True)
    plain = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, temperature=0)
    assert echoed.choices[0].text == PROMPT + plain.choices[0].text

    scored = await client.completions.create(model=MODEL, prompt=PROMPT + " Paris", max_tokens=0, echo=True, logprobs=1)
    choice = scored.choices[0]
    assert choice.text == PROMPT + " Paris" and scored.usage and scored.usage.completion_tokens == 0
    assert choice.logprobs and choice.logprobs.token_logprobs
    assert choice.logprobs.token_logprobs[0] is None
    assert all(value is not None and value <= 0 for value in choice.logprobs.token_logprobs[1:])
    assert "".join(choice.logprobs.tokens or []) == PROMPT + " Paris"


async def test_scored_prompt_agrees_with_generation(chat_oasis: Harness) -> None:
    """The log probability of a generated token equals its score when it is read back as prompt."""
    client = chat_oasis.sdk()
    generated = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=1, temperature=0, logprobs=1)
    lp = generated.choices[0].logprobs
    assert lp and lp.tokens and lp.token_logprobs
    scored = await client.completions.create(
        model=MODEL, prompt=PROMPT + lp.tokens[0], max_tokens=0, echo=True, logprobs=1
    )
    assert scored.choices[0].logprobs and scored.choices[0].logprobs.token_logprobs
    assert scored.choices[0].logprobs.token_logprobs[-1] == pytest.approx(lp.token_logprobs[0], abs=0.02)


async def test_best_of_returns_n_and_bills_every_candidate(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().completions.create(model=MODEL, prompt=PROMPT, max_tokens=5, best_of=3, n=1)
    assert len(reply.choices) == 1 and reply.choices[0].logprobs is None
    assert reply.usage and reply.usage.completion_tokens > 5  # three candidates were generated


async def test_stream_matches_whole_text(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    whole = await client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0)
    stream = await client.completions.create(
        model=MODEL, prompt=PROMPT, max_tokens=10, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.completion_tokens == 10


async def test_a_streamed_echo_carries_the_prompts_logprobs_as_the_whole_reply_does(chat_oasis: Harness) -> None:
    """Scoring a prompt streamed (max_tokens 0) gives the prompt and nothing generated; the echoed prompt's
    chunk carries its log probabilities, as the whole reply's choice does."""
    client = chat_oasis.sdk()
    for max_tokens in (0, 2):
        fields: dict[str, Any] = {"model": MODEL, "prompt": PROMPT, "echo": True, "logprobs": 1, "temperature": 0}
        whole = await client.completions.create(**fields, max_tokens=max_tokens)
        stream = await client.completions.create(
            **fields, max_tokens=max_tokens, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        texts = [c.choices[0].text for c in chunks if c.choices]
        assert "".join(texts) == whole.choices[0].text and texts[0] == PROMPT
        assert chunks[-1].usage and chunks[-1].usage.completion_tokens == max_tokens
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
        streamed = [
            entry for c in chunks if c.choices and c.choices[0].logprobs for entry in c.choices[0].logprobs.tokens or []
        ]
        assert whole.choices[0].logprobs and streamed == whole.choices[0].logprobs.tokens
        first = chunks[0].choices[0].logprobs
        assert first and first.token_logprobs and first.token_logprobs[0] is None and len(first.token_logprobs) > 1
    # Two choices: the prompt is scored once, and both echo it with the same logprobs.
    engine = chat_oasis.container.registry.engine(MODEL)
    scorings = []
    real_score = engine.score  # type: ignore[union-attr]

    async def counted(*args: Any) -> Any:
        scorings.append(args)
        return await real_score(*args)

    engine.score = counted  # type: ignore[union-attr]
    stream = await client.completions.create(
        model=MODEL, prompt=PROMPT, echo=True, logprobs=1, max_tokens=2, n=2, stream=True
    )
    echoed = {
        c.choices[0].index: c.choices[0].logprobs
        for c in [chunk async for chunk in stream]
        if c.choices[0].text == PROMPT
    }
    assert set(echoed) == {0, 1} and echoed[0] == echoed[1] and echoed[0] is not None
    assert len(scorings) == 1


async def test_suffix_without_fill_in_the_middle_is_a_400(chat_oasis: Harness) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await chat_oasis.sdk().completions.create(model=MODEL, prompt="def f(", suffix="    return x", max_tokens=5)
    assert caught.value.param == "suffix"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"logprobs": 6}, "logprobs"),
        ({"n": 3, "best_of": 2}, "best_of"),
        ({"best_of": 2, "stream": True}, "best_of"),
        ({"prompt": [10**9]}, "prompt"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
        # scoring a prompt longer than the context (it reached the engine, whose refusal was a 500)
        ({"prompt": "word " * 3000, "max_tokens": 0, "echo": True, "logprobs": 1}, "prompt"),
        ({"prompt": "word " * 3000, "max_tokens": 5}, "prompt"),  # the prompt alone fills the context
        ({"prompt": "word " * 20_000, "max_tokens": 5}, "prompt"),  # tokenized off the event loop: the same 400
        ({"stream_options": {"include_usage": True}}, "stream_options"),  # without stream, as OpenAI
    ],
)
async def test_bad_requests_get_envelopes(chat_oasis: Harness, change: dict[str, Any], param: str) -> None:
    async with chat_oasis.http() as http:
        response = await http.post("/v1/completions", json={"model": MODEL, "prompt": PROMPT, **change})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_tokenizer_extensions_round_trip(chat_oasis: Harness) -> None:
    async with chat_oasis.http() as http:
        info = (await http.get("/tokenizer_info")).json()
        tokens = (await http.post("/tokenize", json={"prompt": "Hello, world!", "add_special_tokens": False})).json()
        text = (await http.post("/detokenize", json={"tokens": tokens["tokens"]})).json()
        bad = await http.post("/detokenize", json={"tokens": [-5]})
        unknown = await http.get("/tokenizer_info", params={"model": "nope"})
    assert info["eos_token"] == "<|im_end|>" and "im_start" in info["chat_template"]
    assert tokens["count"] == len(tokens["tokens"]) > 1 and tokens["max_model_len"] == 2048
    assert text == {"prompt": "Hello, world!"}
    assert bad.status_code == 400 and unknown.status_code == 404


async def test_lm_eval_finds_the_end_of_text_token_and_the_generated_one_last(chat_oasis: Harness) -> None:
    """lm-eval's remote tokenizer finds EOS by tokenizing its text with add_special_tokens false, and its
    loglikelihood reads `token_logprobs[ctxlen:-1]`: the last entry must be the generated token, even when that
    token ends the text."""
    async with chat_oasis.http() as http:
        eos = (await http.post("/tokenize", json={"prompt": "<|im_end|>", "add_special_tokens": False})).json()
        prompt = (await http.post("/tokenize", json={"prompt": PROMPT, "add_special_tokens": False})).json()
    assert eos["count"] == 1
    (eos_id,) = eos["tokens"]
    client = chat_oasis.sdk()
    for echo in (False, True):
        reply = await client.completions.create(
            model=MODEL,
            prompt=PROMPT,
            max_tokens=1,
            temperature=0,
            logprobs=1,
            echo=echo,
            logit_bias={str(eos_id): 100},
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "stop" and reply.usage and reply.usage.completion_tokens == 1
        assert choice.logprobs and choice.logprobs.token_logprobs
        assert len(choice.logprobs.token_logprobs) == (prompt["count"] + 1 if echo else 1)
        assert choice.logprobs.token_logprobs[-1] is not None and choice.logprobs.token_logprobs[-1] <= 0


async def test_a_prompt_list_the_queue_cannot_hold_is_refused_whole(start_oasis: Any) -> None:
    """A request needing more sequences than the queue can ever hold is a 400 (a 429 would be retried forever, by
    the SDK and by a batch). One that fits, but not beside the work already queued, gets a 429, and the
    sequences already queued for its earlier prompts are cancelled, streamed or not (they used to decode to
    max_tokens with nobody reading them)."""
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(parallel=1, max_queue=3)])
    client = harness.sdk()
    engine: Any = harness.container.registry.engine(MODEL)
    endless: dict[str, Any] = {"max_tokens": 1000, "extra_body": {"ignore_eos": True}}

    async def until_idle() -> bool:
        for _ in range(100):  # the scheduler retires cancelled sequences at its next step
            if not engine.busy:
                return True
            await asyncio.sleep(0.05)
        return False

    with pytest.raises(openai.BadRequestError) as never_fits:
        await client.completions.create(model=MODEL, prompt=["Once upon a time"] * 4, **endless)  # type: ignore[arg-type]
    assert never_fits.value.body["param"] == "prompt"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as never_fits:
        await client.completions.create(model=MODEL, prompt="Once upon a time", n=2, best_of=4, max_tokens=3)
    assert never_fits.value.body["param"] == "best_of"  # type: ignore[index]
    assert await until_idle()

    for stream in (False, True):
        # One request decoding in the one slot and one waiting: the queue has room for two more sequences.
        briefly: dict[str, Any] = {**endless, "max_tokens": 200}
        running = asyncio.create_task(client.completions.create(model=MODEL, prompt="Hello", **briefly))  # type: ignore[call-overload]
        waiting = asyncio.create_task(client.completions.create(model=MODEL, prompt="Hi", **briefly))  # type: ignore[call-overload]
        while engine.load().busy < 1 or engine.load().queued < 1:
            await asyncio.sleep(0.02)
        with pytest.raises(openai.RateLimitError):
            await client.completions.create(model=MODEL, prompt=["Once upon a time"] * 3, stream=stream, **endless)  # type: ignore[call-overload]
        # The refused request's two queued sequences are cancelled: only the waiting request is left in the queue.
        assert sum(not sequence.cancelled for sequence in engine._waiting) == 1, stream
        assert all(reply.choices[0].finish_reason == "length" for reply in await asyncio.gather(running, waiting))
        assert await until_idle(), stream


def _first_tokens(base_url: str) -> float:
    """How many generations have produced their first token, from the Prometheus metrics."""
    text = httpx.get(f"{base_url}/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("oasis_time_to_first_token_seconds_count")
    )


def test_a_streamed_completion_answers_before_its_first_token(tmp_path: Path) -> None:
    """Over a real socket: the status and headers of a streamed completion go out once the request is queued (as
    chat's role chunk does), while the engine reads the prompt, not after the first token."""
    config = tmp_path / "oasis.yaml"
    config.write_text(yaml.safe_dump({"defaults": False, "models": [smollm(parallel=1)]}))
    long_prompt = "The sea was calm and the sky was grey. " * 150  # ~1500 tokens: a read of a few hundred ms
    with oasis_server(tmp_path / "data", oasis_env(None), "--config", str(config)) as server:
        body = {"model": MODEL, "prompt": long_prompt, "max_tokens": 4, "stream": True}
        before = _first_tokens(server.base_url)
        with httpx.stream("POST", f"{server.base_url}/v1/completions", json=body, timeout=60) as response:
            assert response.status_code == 200
            at_headers = _first_tokens(server.base_url)
            text = response.read().decode()
        assert at_headers == before  # the headers came before the first token
        assert _first_tokens(server.base_url) == before + 1
        assert text.rstrip().endswith("data: [DONE]") and '"text"' in text


async def test_a_streamed_completion_whose_client_left_before_its_body_frees_its_slot(start_oasis: Any) -> None:
    """A client gone by the time the answer starts: the sequence queued for it must stop, not generate its 1900
    tokens while the one slot keeps everyone else waiting."""
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(parallel=1)])
    endless = {
        "model": MODEL,
        "prompt": "Write a very long story about the sea.",
        "max_tokens": 1900,
        "logit_bias": {"0": -100, "2": -100},  # no end-of-text token: only the limit or a cancel ends it
        "stream": True,
    }
    body = json.dumps(endless).encode()
    scope = {
        "type": "http",
        # ASGI 2.4: a server that raises from `send` once its client is gone (Starlette then never starts the body)
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/completions",
        "raw_path": b"/v1/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}  # gone once the request is sent

    async def send(message: dict[str, Any]) -> None:
        raise OSError("the client is gone")

    with contextlib.suppress(Exception):  # the app sees the client gone
        await asyncio.wait_for(harness.transport.app(scope, receive, send), timeout=30)
    quick = await asyncio.wait_for(
        harness.sdk().completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, extra_body={"ignore_eos": True}),
        timeout=15,  # 1900 tokens ahead of it would take far longer
    )
    assert quick.usage and quick.usage.completion_tokens == 3
