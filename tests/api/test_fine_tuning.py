"""The fine-tuning API through the official SDK (issue 15): creating jobs and what is refused, their life as a
client sees it, cancelling, and isolation between projects. Training itself is in tests/test_fine_tuning_train.py
(it needs torch, which CI installs in its Python 3.11 venv)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai.types.fine_tuning import FineTuningJob
from sqlalchemy import select, update

from oasis.storage import files as file_rows
from oasis.storage.tables import FineTuningJob as FineTuningJobRow
from tests.conftest import Harness, smollm

MODEL = "smollm2-135m-instruct"


def training_lines(count: int) -> bytes:
    examples = [
        {
            "messages": [
                {"role": "user", "content": f"What is {n} plus {n}?"},
                {"role": "assistant", "content": f"{n} plus {n} is {2 * n}."},
            ]
        }
        for n in range(count)
    ]
    return "".join(json.dumps(example) + "\n" for example in examples).encode()


async def upload(client: openai.AsyncOpenAI, data: bytes, purpose: str = "fine-tune") -> str:
    uploaded = await client.files.create(file=("train.jsonl", io.BytesIO(data)), purpose=purpose)  # type: ignore[arg-type]
    return uploaded.id


async def _oasis(start_oasis: Callable[..., Any], **overrides: Any) -> Harness:
    # The chat model is configured (jobs name it), not loaded: these tests never train.
    harness: Harness = await start_oasis(engine_factories={"llamacpp": _unloadable}, models=[smollm()], **overrides)
    return harness


def _unloadable(spec: Any) -> Any:
    raise RuntimeError("not loaded in these tests")


async def supervised(harness: Harness, training: str, hyperparameters: dict[str, Any]) -> Any:
    """A job created with the newer `method` field (the 1.30.5 SDK cannot send it)."""
    method = {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
    async with harness.http() as http:
        return await http.post(
            "/v1/fine_tuning/jobs", json={"model": MODEL, "training_file": training, "method": method}
        )


@pytest.fixture
async def quiet_oasis(start_oasis: Callable[..., Any]) -> Harness:
    """No in-process worker: a job stays as the API left it."""
    return await _oasis(start_oasis, workers={"in_process": False})


async def test_a_job_is_created_with_every_field_and_auto_hyperparameters(quiet_oasis: Harness) -> None:
    client = quiet_oasis.sdk()
    training = await upload(client, training_lines(12))
    job = await client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=training, suffix="adder", seed=7, hyperparameters={"n_epochs": 2}
    )
    assert job.id.startswith("ftjob-") and job.object == "fine_tuning.job"
    assert (job.status, job.model, job.training_file, job.seed) == ("validating_files", "gpt-4o-mini", training, 7)
    assert job.fine_tuned_model is None and job.finished_at is None and job.result_files == []
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == "auto"
    assert job.error is None or not job.error.message
    assert (await client.fine_tuning.jobs.retrieve(job.id)).id == job.id
    listed = await client.fine_tuning.jobs.list()
    assert [listed_job.id for listed_job in listed.data] == [job.id]
    events = await client.fine_tuning.jobs.list_events(job.id)
    assert events.data[-1].message == f"Created fine-tuning job: {job.id}"
    assert (await client.fine_tuning.jobs.checkpoints.list(job.id)).data == []


async def test_bad_requests_name_their_param(quiet_oasis: Harness) -> None:
    client = quiet_oasis.sdk()
    training = await upload(client, training_lines(12))
    batch_file = await upload(
        client, b'{"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {}}\n', "batch"
    )
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "no-such-model", "training_file": training}, "model"),
        ({"model": MODEL, "training_file": "file-missing"}, "training_file"),
        ({"model": MODEL, "training_file": batch_file}, "training_file"),
        ({"model": MODEL, "training_file": training, "validation_file": batch_file}, "validation_file"),
        ({"model": MODEL, "training_file": training, "suffix": "x" * 65}, "suffix"),
        ({"model": MODEL, "training_file": training, "suffix": "   "}, "suffix"),
        ({"model": MODEL, "training_file": training, "hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        (
            {"model": MODEL, "training_file": training, "hyperparameters": {"batch_size": 300}},
            "hyperparameters.batch_size",
        ),
    ]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.fine_tuning.jobs.create(**body)
        assert caught.value.status_code == 400 and caught.value.param == param, (body, caught.value.body)
    async with quiet_oasis.http() as http:
        reply = await http.post(
            "/v1/fine_tuning/jobs", json={"model": MODEL, "training_file": training, "method": {"type": "dpo"}}
        )
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "method.type"
    reply = await supervised(quiet_oasis, training, {"n_epochs": 0})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "method.supervised.hyperparameters.n_epochs"
    assert (await client.fine_tuning.jobs.list()).data == []  # nothing was created by a refused request


async def test_an_out_of_range_hyperparameter_is_told_its_range(quiet_oasis: Harness) -> None:
    """A value of the right type past its bound hears the bound, not that it should have been "auto" (the
    other member of the field's union), through either way of asking."""
    client = quiet_oasis.sdk()
    training = await upload(client, training_lines(12))
    for asked, bound in (
        ({"n_epochs": 0}, "greater than or equal to 1"),
        ({"batch_size": 300}, "less than or equal to 256"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.fine_tuning.jobs.create(model=MODEL, training_file=training, hyperparameters=asked)  # type: ignore[arg-type]
        assert bound in caught.value.message and "'auto'" not in caught.value.message, caught.value.message
        reply = await supervised(quiet_oasis, training, asked)
        message = reply.json()["error"]["message"]
        assert reply.status_code == 400 and bound in message and "'auto'" not in message, message


async def test_a_suffix_as_long_as_openai_takes_is_accepted(quiet_oasis: Harness) -> None:
    """OpenAI takes a suffix of up to 64 characters (the spec's schema 40, its text 18)."""
    client = quiet_oasis.sdk()
    training = await upload(client, training_lines(12))
    job = await client.fine_tuning.jobs.create(model=MODEL, training_file=training, suffix="s" * 64)
    assert job.status == "validating_files"


async def test_cancel_and_isolation_between_projects(quiet_oasis: Harness) -> None:
    _, our_key = await quiet_oasis.container.keys.create("ours")
    _, their_key = await quiet_oasis.container.keys.create("theirs")
    ours, theirs = quiet_oasis.sdk(api_key=our_key), quiet_oasis.sdk(api_key=their_key)
    job = await ours.fine_tuning.jobs.create(model=MODEL, training_file=await upload(ours, training_lines(12)))
    for call in (
        theirs.fine_tuning.jobs.retrieve(job.id),
        theirs.fine_tuning.jobs.cancel(job.id),
        theirs.fine_tuning.jobs.list_events(job.id),
        theirs.fine_tuning.jobs.checkpoints.list(job.id),
    ):
        with pytest.raises(openai.NotFoundError):
            await call
    assert (await theirs.fine_tuning.jobs.list()).data == []
    cancelled = await ours.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(openai.BadRequestError):
        await ours.fine_tuning.jobs.cancel(job.id)
    assert (await ours.fine_tuning.jobs.list_events(job.id)).data[0].message == "Fine-tuning job cancelled"


async def pause_or_resume(client: openai.AsyncOpenAI, job_id: str, action: str) -> Any:
    """Newer SDKs' `jobs.pause()` / `jobs.resume()`; the May-2024 SDK has neither, so it posts the same request."""
    method = getattr(client.fine_tuning.jobs, action, None)
    if method is not None:
        return await method(job_id)
    return await client.post(f"/fine_tuning/jobs/{job_id}/{action}", cast_to=FineTuningJob)


async def _set_status(harness: Harness, job_id: str, **values: Any) -> None:
    """What a worker does to the row (these tests have none)."""
    async with harness.container.db.session() as session:
        await session.execute(update(FineTuningJobRow).where(FineTuningJobRow.id == job_id).values(**values))
        await session.commit()


async def test_a_running_job_is_paused_resumed_and_a_paused_one_cancelled(quiet_oasis: Harness) -> None:
    _, our_key = await quiet_oasis.container.keys.create("ours")
    _, their_key = await quiet_oasis.container.keys.create("theirs")
    ours, theirs = quiet_oasis.sdk(api_key=our_key), quiet_oasis.sdk(api_key=their_key)
    training = await upload(ours, training_lines(12))
    job = await ours.fine_tuning.jobs.create(model=MODEL, training_file=training)
    for action in ("pause", "resume"):  # a job still validating is neither running nor paused
        with pytest.raises(openai.BadRequestError) as refused:
            await pause_or_resume(ours, job.id, action)
        assert refused.value.code == f"job_not_{action.removesuffix('e')}able"
        assert refused.value.param == "fine_tuning_job_id"
        with pytest.raises(openai.NotFoundError):
            await pause_or_resume(theirs, job.id, action)

    await _set_status(quiet_oasis, job.id, status="running", started_at=job.created_at)
    paused = await pause_or_resume(ours, job.id, "pause")
    assert paused.status == "paused" and paused.finished_at is None and paused.estimated_finish is None
    assert (await ours.fine_tuning.jobs.retrieve(job.id)).status == "paused"
    with pytest.raises(openai.BadRequestError):
        await pause_or_resume(ours, job.id, "pause")
    # a paused job reads its training file again when it resumes: its bytes stay though the file is deleted
    async with quiet_oasis.container.db.session() as session:
        stored = await file_rows.get_file_by_id(session, training)
    assert stored is not None and (await ours.files.delete(training)).deleted
    await quiet_oasis.container.sweeper.sweep(grace_seconds=0)
    assert await quiet_oasis.container.blobs.size(stored.blob_key) > 0

    await _set_status(quiet_oasis, job.id, attempts=3)  # leased three times before the pause
    resumed = await pause_or_resume(ours, job.id, "resume")
    assert resumed.status == "queued"  # until a worker takes it up and trains on from its saved state
    async with quiet_oasis.container.db.session() as session:
        row = await session.scalar(select(FineTuningJobRow).where(FineTuningJobRow.id == job.id))
    assert row is not None and row.attempts == 0  # a pause is no crash: pausing often never fails the job
    with pytest.raises(openai.BadRequestError):
        await pause_or_resume(ours, job.id, "resume")
    messages = [event.message for event in (await ours.fine_tuning.jobs.list_events(job.id)).data]
    assert messages[:2] == ["Fine-tuning job resumed", "Fine-tuning job paused"]

    # a paused job can be cancelled; its saved state is then no longer named, so the sweeper may remove it
    await _set_status(quiet_oasis, job.id, status="paused", resume_blob_key="models/x/state-step-2.tar")
    cancelled = await ours.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    async with quiet_oasis.container.db.session() as session:
        row = await session.scalar(select(FineTuningJobRow).where(FineTuningJobRow.id == job.id))
    assert row is not None and row.resume_blob_key is None
    with pytest.raises(openai.BadRequestError):
        await pause_or_resume(ours, job.id, "resume")


async def test_a_training_file_with_too_few_examples_fails_the_job(start_oasis: Callable[..., Any]) -> None:
    harness = await _oasis(start_oasis)
    client = harness.sdk()
    job = await client.fine_tuning.jobs.create(model=MODEL, training_file=await upload(client, training_lines(4)))
    for _ in range(100):
        job = await client.fine_tuning.jobs.retrieve(job.id)
        if job.status == "failed":
            break
        await asyncio.sleep(0.1)
    assert job.status == "failed" and job.error is not None
    assert (job.error.code, job.error.param) == ("invalid_training_file", "training_file")
    assert "at least 10" in job.error.message and job.finished_at is not None


async def test_events_page_newest_first(quiet_oasis: Harness) -> None:
    client = quiet_oasis.sdk()
    jobs = [
        await client.fine_tuning.jobs.create(model=MODEL, training_file=await upload(client, training_lines(12)))
        for _ in range(3)
    ]
    first = await client.fine_tuning.jobs.list(limit=2)
    assert [job.id for job in first.data] == [jobs[2].id, jobs[1].id] and first.has_more
    rest = await client.fine_tuning.jobs.list(limit=2, after=first.data[-1].id)
    assert [job.id for job in rest.data] == [jobs[0].id] and not rest.has_more


async def test_a_training_file_deleted_while_its_job_waits_keeps_its_bytes(quiet_oasis: Harness) -> None:
    """The file goes from the API at once, as OpenAI's does; the job still trains from it (a resumed job reads it
    again), so its bytes stay until the job ends and the blob sweeper finds them unused."""
    client = quiet_oasis.sdk()
    training = await upload(client, training_lines(12))
    await client.fine_tuning.jobs.create(model=MODEL, training_file=training)
    async with quiet_oasis.container.db.session() as session:
        row = await file_rows.get_file_by_id(session, training)
    assert row is not None
    assert (await client.files.delete(training)).deleted
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(training)
    assert await quiet_oasis.container.blobs.size(row.blob_key) > 0
    assert await quiet_oasis.container.sweeper.sweep(grace_seconds=0) == (0, 0)
    assert await quiet_oasis.container.blobs.size(row.blob_key) > 0


async def test_method_hyperparameters_are_coerced_like_the_top_level_ones(quiet_oasis: Harness) -> None:
    """A number sent as a string under `method` is taken as the number, as at the top level (the worker does
    arithmetic with it)."""
    client = quiet_oasis.sdk()
    training = await upload(client, training_lines(12))
    reply = await supervised(quiet_oasis, training, {"batch_size": "4", "n_epochs": "2"})
    assert reply.status_code == 200, reply.text
    job = await client.fine_tuning.jobs.retrieve(reply.json()["id"])
    assert (job.hyperparameters.batch_size, job.hyperparameters.n_epochs) == (4, 2)
    assert job.hyperparameters.learning_rate_multiplier == "auto"


async def test_jobs_are_listed_by_metadata(quiet_oasis: Harness) -> None:
    client = quiet_oasis.sdk()
    training = await upload(client, training_lines(12))
    made = {}
    for name, metadata in (
        ("a1", {"team": "a"}),
        ("b", {"team": "b"}),
        ("none", None),
        ("a2", {"team": "a", "x": "1"}),
    ):
        # sent as an extra field: the 1.30.5 SDK has no `metadata` argument here
        job = await client.fine_tuning.jobs.create(
            model=MODEL, training_file=training, extra_body={"metadata": metadata} if metadata else None
        )
        made[name] = job.id

    async def listed(query: dict[str, Any], limit: int = 20, after: str | None = None) -> list[str]:
        page = await client.fine_tuning.jobs.list(extra_query=query, limit=limit, **({"after": after} if after else {}))
        return [job.id for job in page.data]

    assert await listed({"metadata[team]": "a"}) == [made["a2"], made["a1"]]  # newest first
    assert await listed({"metadata[team]": "a", "metadata[x]": "1"}) == [made["a2"]]
    assert await listed({"metadata[team]": "c"}) == []
    assert await listed({"metadata": "null"}) == [made["none"]]
    assert await listed({"metadata[team]": "a"}, limit=1) == [made["a2"]]
    assert await listed({"metadata[team]": "a"}, limit=1, after=made["a2"]) == [made["a1"]]
    assert len(await listed({})) == 4
    with pytest.raises(openai.BadRequestError) as caught:
        await listed({"metadata": "team"})
    assert caught.value.param == "metadata"


async def test_a_loaded_fine_tune_is_refused_as_a_base_like_one_not_loaded(start_oasis: Callable[..., Any]) -> None:
    """Whether a fine-tune happened to be loaded for chat must not decide: a worker cannot resolve it, so a job on
    it would only fail later."""
    from oasis.engines.registry import serve_for_project
    from oasis.services.keys import DEFAULT_PROJECT
    from oasis.settings import ModelSpec
    from tests.engines import IdleEngine

    harness: Harness = await start_oasis(
        engine_factories={"llamacpp": IdleEngine}, models=[smollm()], workers={"in_process": False}
    )
    client = harness.sdk()
    training = await upload(client, training_lines(12))
    fine_tune = f"ft:{MODEL}:{DEFAULT_PROJECT}:adder:ftjob-abc"
    serve_for_project(DEFAULT_PROJECT)
    await harness.container.registry.add(ModelSpec.model_validate({**smollm(), "id": fine_tune}), DEFAULT_PROJECT)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.fine_tuning.jobs.create(model=fine_tune, training_file=training)
    assert caught.value.code == "model_not_available" and "fine-tuned model" in caught.value.message
    assert (await client.fine_tuning.jobs.list()).data == []
