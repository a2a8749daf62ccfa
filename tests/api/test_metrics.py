"""`GET /metrics` in Prometheus' text format: requests, tokens, time to first token, 429s, model and queue
states; and its optional token."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from oasis.engines.kinds import installed_engine_factories
from tests.conftest import E5, Harness, smollm
from tests.engines import BrokenEngine, HeldEmbedder


async def scrape(harness: Harness, token: str | None = None) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with harness.http(api_key=token) as http:
        reply = await http.get("/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_tokens_and_model_states_are_counted(start_oasis: Callable[..., Any]) -> None:
    harness: Harness = await start_oasis(
        engine_factories=installed_engine_factories() | {"broken": BrokenEngine},
        models=[smollm(), E5, {"id": "bad", "engine": "broken"}],
    )
    client = harness.sdk()
    chat_id, embed_id = "smollm2-135m-instruct", "multilingual-e5-small"
    before = await scrape(harness)
    reply = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hi"}], max_tokens=5
    )
    embedded = await client.embeddings.create(model="text-embedding-3-small", input=["one", "two words"])
    after = await scrape(harness)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = {"method": "POST", "route": "/v1/chat/completions"}
    assert moved("oasis_http_requests_total", **route, status="200") == 1
    assert moved("oasis_http_request_duration_seconds_count", **route) == 1
    # Tokens are counted under the configured id, whatever alias the client used.
    assert reply.usage is not None and embedded.usage is not None
    assert moved("oasis_tokens_total", model=chat_id, kind="prompt") == reply.usage.prompt_tokens
    assert moved("oasis_tokens_total", model=chat_id, kind="completion") == reply.usage.completion_tokens
    assert moved("oasis_tokens_total", model=embed_id, kind="prompt") == embedded.usage.prompt_tokens
    assert moved("oasis_time_to_first_token_seconds_count", model=chat_id) == 1

    assert value(after, "oasis_models", state="ready") == 2 and value(after, "oasis_models", state="failed") == 1
    assert value(after, "oasis_engine_slots", model=chat_id) == 4
    assert value(after, "oasis_engine_busy_slots", model=chat_id) == 0
    assert value(after, "oasis_engine_queue_depth", model=embed_id) == 0
    assert ("oasis_job_queue_depth", frozenset({("kind", "ingestion")})) in after
    assert value(after, "process_resident_memory_bytes") > 0
    # An unknown path is one label value, not one per URL.
    async with harness.http() as http:
        await http.get("/v1/no-such-thing/123")
    assert value(await scrape(harness), "oasis_http_requests_total", method="GET", route="unmatched", status="404") >= 1
    # So is a static-files path, found or not (anyone may ask for any name there, without a key): Starlette
    # leaves the file's name out of path_params, and some versions give the middleware the mount as the route.
    async with harness.http(api_key=None) as http:
        for name in ("nope-1.js", "nope-2.js", "app.js"):
            await http.get(f"/dashboard/assets/{name}")
    samples = await scrape(harness)
    routes = {dict(labels).get("route") for name, labels in samples if name == "oasis_http_requests_total"}
    assert not any(route and "nope" in route for route in routes), routes


async def test_a_database_that_does_not_answer_costs_the_scrape_only_the_job_gauges(
    oasis: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oasis.storage import vector_stores

    async def unreachable(*_: Any) -> int:
        raise OSError("connection refused")

    assert value(await scrape(oasis), "oasis_database_up") == 1
    monkeypatch.setattr(vector_stores, "count_waiting_files", unreachable)
    samples = await scrape(oasis)
    assert value(samples, "oasis_database_up") == 0 and value(samples, "process_resident_memory_bytes") > 0
    assert ("oasis_job_queue_depth", frozenset({("kind", "ingestion")})) not in samples


async def test_ingestion_jobs_are_timed_by_outcome(start_oasis: Callable[..., Any]) -> None:
    harness: Harness = await start_oasis(engine_factories=None, models=[E5])
    before = await scrape(harness)
    client = harness.sdk()
    uploaded = await client.files.create(file=("a.txt", b"Bees dance to point at flowers."), purpose="assistants")
    stores = getattr(client, "vector_stores", None) or client.beta.vector_stores
    store = await stores.create(file_ids=[uploaded.id])
    for _ in range(300):
        if (await stores.retrieve(store.id)).status == "completed":
            break
        await asyncio.sleep(0.1)
    after = await scrape(harness)
    name = "oasis_job_duration_seconds_count"
    assert (
        value(after, name, kind="ingestion", outcome="completed")
        - value(before, name, kind="ingestion", outcome="completed")
        == 1
    )
    assert value(after, "oasis_job_queue_depth", kind="ingestion") == 0


async def test_a_full_embedding_queue_is_a_429_with_retry_after(start_oasis: Callable[..., Any]) -> None:
    release = threading.Event()
    harness: Harness = await start_oasis(
        engine_factories={"held": lambda spec: HeldEmbedder(spec, release)},
        models=[{**E5, "engine": "held", "options": {"max_queue": 0}}],
    )
    engine: Any = harness.container.registry.engine("multilingual-e5-small")
    client = harness.sdk()
    try:
        running = asyncio.create_task(client.embeddings.create(model="text-embedding-3-small", input=["first"]))
        for _ in range(500):
            if engine.load().busy:
                break
            await asyncio.sleep(0.01)
        assert engine.load().busy == 1
        before = await scrape(harness)
        with pytest.raises(openai.RateLimitError) as refused:
            await client.embeddings.create(model="text-embedding-3-small", input="one more")
        assert refused.value.response.headers["retry-after"] == "1"
        after = await scrape(harness)
    finally:
        release.set()
    assert len((await running).data) == 1  # the request already running is not disturbed
    name = "oasis_throttled_requests_total"
    assert value(after, name, model="multilingual-e5-small") - value(before, name, model="multilingual-e5-small") == 1


async def test_the_metrics_token_guards_metrics_and_project_keys_do_not_open_it(
    start_oasis: Callable[..., Any],
) -> None:
    harness: Harness = await start_oasis(server={"metrics_token": "m-token"})
    async with harness.http(api_key=None) as http:
        refused = await http.get("/metrics")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    async with harness.http(api_key="sk-test") as http:
        assert (await http.get("/metrics")).status_code == 401
    assert value(await scrape(harness, token="m-token"), "oasis_models", state="ready") == 0


async def test_a_metrics_token_that_is_not_ascii_is_a_401(start_oasis: Callable[..., Any]) -> None:
    harness: Harness = await start_oasis(server={"metrics_token": "m-token"})
    async with harness.http(api_key=None) as http:
        refused = await http.get("/metrics", headers={"Authorization": "Bearer caf\xe9".encode("latin-1")})
    assert refused.status_code == 401
