"""The database handle: one async engine, sessions, and migrations applied at start."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

# What services hold: a unit of work they pass to the repositories (storage/<area>.py), never SQL of their own.
Session = AsyncSession


class Conflict(Exception):
    """A write broke a uniqueness rule: another writer got there first (the caller reads what it wrote)."""


MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same for every replica that migrates the same database.
_MIGRATION_LOCK_ID = 7_305_512_233


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the one writer; busy_timeout waits for the lock instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            db_path = url.split("///", 1)[-1]
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self._sqlite_path = url.split("///", 1)[-1] if self.is_sqlite else None
        self._point_reader: sqlite3.Connection | None = None
        self.engine = create_async_engine(url, pool_pre_ping=not self.is_sqlite)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _tune_sqlite)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self._sessions() as session:
            try:
                yield session
            except IntegrityError as exc:
                await session.rollback()
                raise Conflict(str(exc.orig)) from exc

    async def migrate(self) -> None:
        """Bring the schema to the newest migration; safe when several replicas start at once."""
        async with self.engine.connect() as conn:
            if not self.is_sqlite:
                await conn.execute(text("SELECT pg_advisory_lock(:id)"), {"id": _MIGRATION_LOCK_ID})
            try:
                await conn.run_sync(_upgrade_to_head)
                await conn.commit()
            finally:
                if not self.is_sqlite:
                    await conn.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": _MIGRATION_LOCK_ID})
                    await conn.commit()

    def sqlite_point_read(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One row by a point lookup on SQLite, synchronously.

        For the per-request hot path (API key lookups): an indexed read in WAL mode never waits for writers and
        takes microseconds, far less than aiosqlite's hop to its thread and back. None on PostgreSQL, where the
        caller uses a session as usual.
        """
        if self._sqlite_path is None:
            return None
        if self._point_reader is None:
            self._point_reader = sqlite3.connect(self._sqlite_path, check_same_thread=False, isolation_level=None)
            self._point_reader.execute("PRAGMA busy_timeout=30000")
            self._point_reader.execute("PRAGMA query_only=ON")
        row: tuple[Any, ...] | None = self._point_reader.execute(sql, params).fetchone()
        return row

    async def close(self) -> None:
        if self._point_reader is not None:
            self._point_reader.close()
            self._point_reader = None
        await self.engine.dispose()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _upgrade_to_head(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
