"""Models API through the official SDK: configured models, aliases, owned models, deletion rules."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest

from oasis.engines.registry import UnknownEngineKind
from oasis.settings import ModelSpec
from oasis.storage.clock import now
from oasis.storage.projects import get_or_create_project
from oasis.storage.tables import FineTuningCheckpoint, OwnedModel
from tests.conftest import Harness
from tests.engines import BrokenEngine, GatedEngine, IdleEngine

TINY = {"id": "tiny-chat", "engine": "idle", "aliases": ["gpt-4o", "gpt-3.5-turbo"], "owned_by": "oasis"}


@pytest.fixture
async def served(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories={"idle": IdleEngine}, models=[TINY])
    return harness


async def _own_model(harness: Harness, project_name: str, model_id: str) -> None:
    async with harness.container.db.session() as session:
        project = await get_or_create_project(session, project_name)
        session.add(OwnedModel(id=model_id, project_id=project.id, created_at=now(), owned_by=f"user-{project_name}"))
        await session.commit()


async def test_list_shows_models_and_aliases(served: Harness) -> None:
    listed = await served.sdk().models.list()
    assert [m.id for m in listed.data] == ["tiny-chat", "gpt-4o", "gpt-3.5-turbo"]
    assert all(m.object == "model" and m.owned_by == "oasis" and m.created > 0 for m in listed.data)


async def test_retrieve_by_id_and_alias(served: Harness) -> None:
    client = served.sdk()
    assert (await client.models.retrieve("tiny-chat")).id == "tiny-chat"
    alias = await client.models.retrieve("gpt-4o")
    assert (alias.id, alias.object) == ("gpt-4o", "model")


async def test_unknown_model_is_404(served: Harness) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await served.sdk().models.retrieve("gpt-5-ultra")
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        await served.sdk().models.delete("gpt-5-ultra")


async def test_configured_models_cannot_be_deleted(served: Harness) -> None:
    for name in ("tiny-chat", "gpt-4o"):
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await served.sdk().models.delete(name)
        assert caught.value.status_code == 403
        assert "configuration" in caught.value.message
    assert len((await served.sdk().models.list()).data) == 3


async def test_owned_model_is_listed_and_deleted_by_its_project_only(served: Harness) -> None:
    _, key_a = await served.container.keys.create("alpha")
    _, key_b = await served.container.keys.create("beta")
    model_id = "ft:tiny-chat:alpha::abc123"
    await _own_model(served, "alpha", model_id)
    alice, bob = served.sdk(key_a), served.sdk(key_b)

    assert model_id in [m.id for m in (await alice.models.list()).data]
    assert (await alice.models.retrieve(model_id)).owned_by == "user-alpha"
    assert model_id not in [m.id for m in (await bob.models.list()).data]
    with pytest.raises(openai.NotFoundError):
        await bob.models.retrieve(model_id)
    with pytest.raises(openai.NotFoundError):
        await bob.models.delete(model_id)

    deleted = await alice.models.delete(model_id)
    assert (deleted.id, deleted.deleted) == (model_id, True)
    assert model_id not in [m.id for m in (await alice.models.list()).data]
    with pytest.raises(openai.NotFoundError):
        await alice.models.retrieve(model_id)


async def test_a_fine_tunes_checkpoint_is_looked_up_by_its_project_only(served: Harness) -> None:
    """A checkpoint answers chat under its own name (tests/test_fine_tuning_train.py), so a client that checks a
    model before using it finds it; another project does not."""
    _, key_a = await served.container.keys.create("alpha")
    _, key_b = await served.container.keys.create("beta")
    name = "ft:tiny-chat:alpha::abc123:ckpt-step-4"
    async with served.container.db.session() as session:
        project = await get_or_create_project(session, "alpha")
        session.add(
            FineTuningCheckpoint(
                id="ftckpt_abc",
                job_id="ftjob-abc123",
                project_id=project.id,
                created_at=1_700_000_000,
                fine_tuned_model_checkpoint=name,
                step_number=4,
                metrics_json="{}",
                adapter_blob_key="models/ftjob-abc123/ckpt-step-4.tar",
            )
        )
        await session.commit()
    found = await served.sdk(key_a).models.retrieve(name)
    assert (found.id, found.object, found.created, found.owned_by) == (name, "model", 1_700_000_000, project.id)
    with pytest.raises(openai.NotFoundError) as caught:
        await served.sdk(key_b).models.retrieve(name)
    assert caught.value.code == "model_not_found"


async def test_health_is_503_until_models_load(start_oasis: Callable[..., Any]) -> None:
    gate = asyncio.Event()
    harness: Harness = await start_oasis(
        engine_factories={"gated": lambda spec: GatedEngine(spec, gate)},
        models=[{"id": "slow", "engine": "gated"}],
        wait_ready=False,
    )
    async with harness.http(api_key=None) as http:
        loading = await http.get("/health")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        gate.set()
        await asyncio.wait_for(harness.container.registry.settled.wait(), timeout=10)
        ready = await http.get("/health")
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    assert ready.json()["max_upload_bytes"] == 512 * 1024 * 1024


async def test_a_model_that_fails_to_load_keeps_health_503_and_says_why(
    start_oasis: Callable[..., Any],
) -> None:
    harness: Harness = await start_oasis(
        engine_factories={"broken": BrokenEngine},
        models=[{"id": "bad", "engine": "broken"}],
        wait_ready=False,
    )
    await asyncio.wait_for(harness.container.registry.settled.wait(), timeout=10)
    async with harness.http() as http:
        health = await http.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "error" and "unreadable" in health.json()["error"]
    assert health.json()["models"] == [
        {"id": "bad", "engine": "broken", "state": "failed", "error": "RuntimeError: weights for bad are unreadable"}
    ]


def _breaks_when_named_bad(spec: ModelSpec) -> IdleEngine:
    return BrokenEngine(spec) if spec.id.startswith("bad") else IdleEngine(spec)


async def test_a_failed_model_fails_alone(start_oasis: Callable[..., Any]) -> None:
    """The model after a broken one still loads, /health stays 200 while its kind has a ready model, and a
    request for the broken one is a 503 that says why."""
    harness: Harness = await start_oasis(
        engine_factories={"idle": _breaks_when_named_bad},
        models=[{"id": "bad-chat", "engine": "idle"}, {"id": "good-chat", "engine": "idle", "aliases": ["gpt-4o"]}],
    )
    async with harness.http() as http:
        health = await http.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    states = {model["id"]: model["state"] for model in health.json()["models"]}
    assert states == {"bad-chat": "failed", "good-chat": "ready"}

    client = harness.sdk()
    assert (await client.models.retrieve("gpt-4o")).id == "gpt-4o"
    # The list says what can be used: the broken model is left out (a request for it still says why).
    assert [model.id for model in (await client.models.list()).data] == ["good-chat", "gpt-4o"]
    with pytest.raises(openai.InternalServerError) as failed:
        await client.chat.completions.create(model="bad-chat", messages=[{"role": "user", "content": "hi"}])
    assert failed.value.status_code == 503
    assert "failed to load" in failed.value.message and "unreadable" in failed.value.message
    # Retrieving it answers as using it does, not as if it were there.
    with pytest.raises(openai.InternalServerError) as retrieved:
        await client.models.retrieve("bad-chat")
    assert retrieved.value.status_code == 503 and "unreadable" in retrieved.value.message


async def test_health_needs_a_ready_model_of_every_kind(start_oasis: Callable[..., Any]) -> None:
    gate = asyncio.Event()
    harness: Harness = await start_oasis(
        engine_factories={"idle": IdleEngine, "gated": lambda spec: GatedEngine(spec, gate)},
        models=[{"id": "quick", "engine": "idle"}, {"id": "slow", "engine": "gated"}],
        wait_ready=False,
    )
    async with harness.http(api_key=None) as http:
        for _ in range(100):
            if harness.container.registry.state("quick").status == "ready":  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.01)
        waiting = await http.get("/health")
        assert waiting.status_code == 503 and waiting.json()["status"] == "loading"
        assert {m["id"]: m["state"] for m in waiting.json()["models"]} == {"quick": "ready", "slow": "loading"}
        gate.set()
        await asyncio.wait_for(harness.container.registry.settled.wait(), timeout=10)
        assert (await http.get("/health")).status_code == 200


async def test_unknown_engine_kind_is_refused_at_start(start_oasis: Callable[..., Any]) -> None:
    with pytest.raises(UnknownEngineKind, match="warp-drive"):
        await start_oasis(models=[{"id": "x", "engine": "warp-drive"}])


async def test_a_loaded_fine_tune_is_not_shown_to_health_or_metrics_by_name(start_oasis: Callable[..., Any]) -> None:
    """/health and /metrics answer anyone who may reach them: a project's fine-tune (its id names the project
    and the suffix the user chose) is counted under its base model's name, and not listed."""
    from oasis.metrics import count_tokens, model_label

    harness: Harness = await start_oasis(
        engine_factories={"idle": IdleEngine}, models=[{"id": "base", "engine": "idle"}]
    )
    fine_tune = "ft:base:proj_secret:my-private-suffix:ftjob-abc"
    await harness.container.registry.add(ModelSpec(id=fine_tune, engine="idle"), "proj_secret")
    async with harness.http(api_key=None) as http:
        health = await http.get("/health")
    assert [model["id"] for model in health.json()["models"]] == ["base"]
    assert model_label(fine_tune) == "ft:base" and model_label("base") == "base"
    count_tokens(fine_tune, 7, 3)  # as a chat with the fine-tune counts its tokens
    async with harness.http(api_key=None) as http:
        scraped = (await http.get("/metrics")).text
    assert 'oasis_tokens_total{kind="prompt",model="ft:base"}' in scraped
    assert "proj_secret" not in scraped and "my-private-suffix" not in scraped
