"""Rate limits as OpenAI's: requests and tokens a minute per project (or per key), `x-ratelimit-*` headers on
replies, a 429 `rate_limit_exceeded` with `Retry-After` past them, counted across replicas through Redis."""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import openai
import pytest

from oasis.services.rate_limits import estimate_tokens
from tests.conftest import Harness, smollm

# A model no test configures: a request for it is admitted (and counted) and then answered 404, no engine needed.
NO_MODEL = "no-such-model"


def _chat(content: str, max_tokens: int) -> dict[str, Any]:
    return {"model": NO_MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}


async def test_requests_per_minute_counted_down_then_a_429_with_retry_after(start_oasis: Callable[..., Any]) -> None:
    oasis: Harness = await start_oasis(rate_limits={"requests_per_minute": 3})
    async with oasis.http() as http:
        remaining = []
        for _ in range(3):
            answer = await http.get("/v1/models")
            assert answer.status_code == 200
            assert answer.headers["x-ratelimit-limit-requests"] == "3"
            remaining.append(answer.headers["x-ratelimit-remaining-requests"])
            assert re.fullmatch(r"\d+ms|[\d.]+s|\d+m\d+s", answer.headers["x-ratelimit-reset-requests"])
            assert "x-ratelimit-limit-tokens" not in answer.headers  # no token limit set
        assert remaining == ["2", "1", "0"]
        refused = await http.get("/v1/models")
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert "Limit 3" in error["message"]
        # one request comes back every 20 s at 3 a minute
        assert 1 <= int(refused.headers["retry-after"]) <= 20
        assert refused.headers["x-ratelimit-remaining-requests"] == "0"
        assert (await http.get("/health")).status_code == 200  # not an API call: not counted
    with pytest.raises(openai.RateLimitError):
        await oasis.sdk().models.list()


async def test_tokens_per_minute_count_the_prompt_and_max_tokens(start_oasis: Callable[..., Any]) -> None:
    oasis: Harness = await start_oasis(rate_limits={"tokens_per_minute": 1000})
    async with oasis.http() as http:
        body = _chat("x" * 1000, 300)  # about 250 prompt tokens (and the JSON around them) + 300
        first = await http.post("/v1/chat/completions", json=body)
        assert first.status_code == 404  # admitted, then: no such model
        spent = 1000 - int(first.headers["x-ratelimit-remaining-tokens"])
        assert spent == estimate_tokens("/v1/chat/completions", body) and 550 < spent < 600
        assert first.headers["x-ratelimit-limit-tokens"] == "1000"
        assert (await http.post("/v1/chat/completions", json=body)).status_code == 429
        # One request alone over the limit can never pass: it says so rather than "try again".
        too_large = await http.post("/v1/chat/completions", json=_chat("hi", 5000))
        assert too_large.status_code == 429 and too_large.json()["error"]["type"] == "tokens"
        assert "Request too large" in too_large.json()["error"]["message"]
        # Embeddings count their input; a small request still fits in what is left.
        counted_from = time.monotonic()
        small = await http.post("/v1/embeddings", json={"model": NO_MODEL, "input": "a few words"})
        assert small.status_code == 404 and int(small.headers["x-ratelimit-remaining-tokens"]) < 1000 - spent
        # The Responses API counts its instructions, input and max_output_tokens as chat counts its own.
        left = int(small.headers["x-ratelimit-remaining-tokens"])
        response = {"model": NO_MODEL, "instructions": "Be brief.", "input": "y" * 1200, "max_output_tokens": 200}
        assert estimate_tokens("/v1/responses", response) > left
        # an image's data is not text the model reads, as in chat
        image = {"type": "input_image", "image_url": "data:image/png;base64," + "A" * 100_000}
        pictured = {**response, "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}, image]}]}
        assert estimate_tokens("/v1/responses", pictured) < 250
        # a prompt's variables are text the model reads (an image variable's data is not)
        variables = {"name": "w" * 800, "photo": image}
        prompted = {**response, "input": "hi", "prompt": {"id": "pmpt_1", "variables": variables}}
        assert (
            195
            < estimate_tokens("/v1/responses", prompted) - estimate_tokens("/v1/responses", {**response, "input": "hi"})
            < 210
        )
        assert (await http.post("/v1/responses", json=response)).status_code == 429
        brief = {**response, "input": "y", "max_output_tokens": 2}
        remaining = int((await http.post("/v1/responses", json=brief)).headers["x-ratelimit-remaining-tokens"])
        # the bucket refills 1000 tokens a minute meanwhile: a slow machine sees a token or two come back
        refilled = math.ceil((time.monotonic() - counted_from) * 1000 / 60)
        expected = left - estimate_tokens("/v1/responses", brief)
        assert expected <= remaining <= expected + refilled
        # A compaction counts its input and the summary it asks for (512 tokens), whatever max_output_tokens says.
        compacting = {"model": NO_MODEL, "input": "z" * 400, "max_output_tokens": 1}
        assert estimate_tokens("/v1/responses/compact", compacting) == estimate_tokens(
            "/v1/responses", {**compacting, "max_output_tokens": 512}
        )
        # a compaction sent back counts its summary, which the model reads
        summary = {"type": "compaction", "encrypted_content": "s" * 800}
        assert (
            estimate_tokens("/v1/responses", {**response, "input": [summary]})
            >= estimate_tokens("/v1/responses", {**response, "input": []}) + 200
        )
        refused = await http.post("/v1/responses/compact", json=compacting)
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "tokens"


async def _runs_oasis(
    start_oasis: Callable[..., Any], tokens_per_minute: int, **model_options: Any
) -> tuple[Harness, openai.AsyncOpenAI, Any]:
    """A server with the shipped chat model and a project token limit, its SDK client and an assistant."""
    oasis: Harness = await start_oasis(
        engine_factories=None, models=[smollm(**model_options)], rate_limits={"tokens_per_minute": tokens_per_minute}
    )
    client = oasis.sdk()
    assistant = await client.beta.assistants.create(model="gpt-4o-mini", instructions="Answer briefly.", temperature=0)
    return oasis, client, assistant


async def test_a_runs_turns_count_against_its_projects_tokens(start_oasis: Callable[..., Any]) -> None:
    tpm = 600  # 10 tokens a second come back
    oasis, client, assistant = await _runs_oasis(start_oasis, tpm)
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "Say hello."}])
    started = time.monotonic()
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256, poll_interval_ms=50
    )
    assert run.status in ("completed", "incomplete"), run.last_error
    assert run.usage is not None
    async with oasis.http() as http:
        body = _chat("hi", 10)
        answer = await http.post("/v1/chat/completions", json=body)
    refilled = math.ceil((time.monotonic() - started) * tpm / 60) + 1
    # The run's turn took its prompt and its completion budget, as a chat request with max_tokens would.
    turn = run.usage.prompt_tokens + 256
    remaining = int(answer.headers["x-ratelimit-remaining-tokens"])
    assert remaining <= tpm - estimate_tokens("/v1/chat/completions", body) - turn + refilled


async def test_a_run_past_its_projects_token_limit_fails_with_rate_limit_exceeded(
    start_oasis: Callable[..., Any],
) -> None:
    _, client, assistant = await _runs_oasis(start_oasis, 40)
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "Tell me about the sea."}])
    run = await client.beta.threads.runs.create_and_poll(  # its prompt and budget, ~280 tokens, past 40 a minute
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256
    )
    assert run.status == "failed" and run.last_error is not None
    assert run.last_error.code == "rate_limit_exceeded" and "tokens per minute" in run.last_error.message
    assert not (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data


async def test_a_runs_turn_is_charged_no_more_than_its_context_leaves_room_for(
    start_oasis: Callable[..., Any],
) -> None:
    # A budget far past the 512-token context: the turn can generate only what the context leaves, and that is
    # what it takes from the 1000 tokens a minute (the whole budget would be a "Request too large" failure).
    oasis, client, assistant = await _runs_oasis(start_oasis, 1000, context_length=512, parallel=1)
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "Say hello."}])
    started = time.monotonic()
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=100_000, poll_interval_ms=50
    )
    assert run.status == "completed", run.last_error
    async with oasis.http() as http:
        answer = await http.post("/v1/chat/completions", json=_chat("hi", 10))
    refilled = math.ceil((time.monotonic() - started) * 1000 / 60) + 1
    # The prompt and the room after it fill the context: the turn took 512 tokens (some came back since).
    spent = (
        1000
        - estimate_tokens("/v1/chat/completions", _chat("hi", 10))
        - int(answer.headers["x-ratelimit-remaining-tokens"])
    )
    assert 512 - refilled <= spent <= 512


async def test_a_run_after_its_project_spent_its_tokens_fails_with_rate_limit_reached(
    start_oasis: Callable[..., Any],
) -> None:
    # Each turn takes its prompt and a 400-token budget (~440 tokens) of 500 a minute: the first run fits, the
    # second finds the minute's tokens spent (8 a second come back: it would need most of a minute).
    _, client, assistant = await _runs_oasis(start_oasis, 500)
    runs = []
    for _ in range(2):
        thread = await client.beta.threads.create(messages=[{"role": "user", "content": "Say hello."}])
        runs.append(
            await client.beta.threads.runs.create_and_poll(
                thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=400, poll_interval_ms=50
            )
        )
    first, second = runs
    assert first.status == "completed", first.last_error
    assert second.status == "failed" and second.last_error is not None
    assert second.last_error.code == "rate_limit_exceeded"
    assert "Rate limit reached" in second.last_error.message and "tokens per min" in second.last_error.message
    assert not (await client.beta.threads.messages.list(second.thread_id, run_id=second.id)).data


async def test_a_named_project_and_a_key_have_limits_of_their_own(start_oasis: Callable[..., Any]) -> None:
    oasis: Harness = await start_oasis()
    _, team_key = await oasis.container.keys.create("team-a")
    vip, vip_key = await oasis.container.keys.create("team-a")
    _, other_key = await oasis.container.keys.create("team-b")
    oasis = await start_oasis(  # a server with these limits, on the same database
        rate_limits={
            "projects": {"team-a": {"requests_per_minute": 1}},
            "keys": {vip.id: {"requests_per_minute": 5}},
        }
    )
    async with oasis.http(team_key) as team, oasis.http(vip_key) as vip_http, oasis.http(other_key) as other:
        assert (await team.get("/v1/models")).status_code == 200
        assert (await team.get("/v1/models")).status_code == 429
        answer = await vip_http.get("/v1/models")  # same project, but its key has limits of its own
        assert answer.status_code == 200 and answer.headers["x-ratelimit-limit-requests"] == "5"
        unlimited = await other.get("/v1/models")  # no limit names team-b, and none is set for all
        assert unlimited.status_code == 200 and "x-ratelimit-limit-requests" not in unlimited.headers


async def test_replicas_sharing_redis_count_together(start_oasis: Callable[..., Any]) -> None:
    import redis.asyncio

    redis_url = "redis://127.0.0.1:6379/0"
    probe = redis.asyncio.from_url(redis_url, socket_connect_timeout=1)
    try:
        await probe.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379 (CI machines run one)")
    finally:
        await probe.aclose()
    limits = {"requests_per_minute": 3}
    first: Harness = await start_oasis(rate_limits=limits, redis_url=redis_url)
    second: Harness = await start_oasis(rate_limits=limits, redis_url=redis_url)  # same database: same project
    # A project of its own in the shared Redis, whatever earlier runs left there.
    _, key = await first.container.keys.create(f"redis-{uuid.uuid4().hex[:8]}")
    async with first.http(key) as one, second.http(key) as two:
        assert (await one.get("/v1/models")).status_code == 200
        assert (await one.get("/v1/models")).status_code == 200
        answer = await two.get("/v1/models")
        assert answer.status_code == 200 and answer.headers["x-ratelimit-remaining-requests"] == "0"
        assert (await one.get("/v1/models")).status_code == 429
        assert (await two.get("/v1/models")).status_code == 429


async def test_streamed_replies_carry_the_headers_too(start_oasis: Callable[..., Any]) -> None:
    oasis: Harness = await start_oasis(rate_limits={"requests_per_minute": 10})
    client = oasis.sdk()
    stored = await client.files.create(file=("a.txt", b"hello"), purpose="assistants")
    async with oasis.http() as http:
        download = await http.get(f"/v1/files/{stored.id}/content")  # a streamed response
    assert download.content == b"hello" and download.headers["x-ratelimit-remaining-requests"] == "8"


async def test_odd_counts_neither_refill_the_bucket_nor_slip_past_it(start_oasis: Callable[..., Any]) -> None:
    oasis: Harness = await start_oasis(rate_limits={"tokens_per_minute": 1000})
    async with oasis.http() as http:
        # A negative max_tokens (refused by validation later) must not add tokens to the bucket on the way.
        negative = await http.post("/v1/chat/completions", json=_chat("hi", -1_000_000_000))
        assert negative.status_code in (400, 404) and int(negative.headers["x-ratelimit-remaining-tokens"]) < 1000
        # Counts the schema accepts as numbers count as numbers.
        for written in (450.0, "450"):
            counted = await http.post("/v1/chat/completions", json=_chat("hi", written))  # type: ignore[arg-type]
            assert counted.status_code == 404, written
        assert int(counted.headers["x-ratelimit-remaining-tokens"]) < 100
        assert (await http.post("/v1/chat/completions", json=_chat("hi", 450))).status_code == 429
        # Image data is not text the model reads: it does not count as prompt tokens.
        picture = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100_000}}
        body = {
            "model": NO_MODEL,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "what?"}, picture]}],
        }
        assert estimate_tokens("/v1/chat/completions", body) < 50
        # Every best_of candidate is generated, however few come back.
        candidates = {"model": NO_MODEL, "prompt": "hi", "max_tokens": 100, "n": 2, "best_of": 20}
        assert estimate_tokens("/v1/completions", candidates) == 1 + 100 * 20
        # A body the endpoint refuses is counted as nothing, and a count too long for int() as past every limit:
        # neither is a 500 on the way.
        not_a_list = await http.post("/v1/chat/completions", json={"model": NO_MODEL, "messages": 5})
        assert not_a_list.status_code == 400, not_a_list.text
        endless = {"model": NO_MODEL, "messages": [], "max_tokens": "9" * 5000}
        assert (await http.post("/v1/chat/completions", json=endless)).status_code == 429


async def test_a_redis_that_does_not_answer_lets_requests_through(start_oasis: Callable[..., Any]) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    oasis: Harness = await start_oasis(rate_limits={"requests_per_minute": 1}, redis_url=f"redis://127.0.0.1:{port}/0")
    async with oasis.http() as http:
        for _ in range(3):
            answer = await http.get("/v1/models")
            assert answer.status_code == 200 and "x-ratelimit-limit-requests" not in answer.headers
