"""The migrations build exactly the tables the code declares: a column added to one and not the other would
break a database made by `oasis serve` (migrations) but not a test that only used the declarations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from oasis.storage.db import Database
from oasis.storage.tables import Base


async def test_migrations_build_the_declared_tables(tmp_path: Path, postgres_url: str | None) -> None:
    db = Database(postgres_url or f"sqlite+aiosqlite:///{tmp_path / 'oasis.db'}")
    try:
        await db.migrate()

        def declared(item: Any, name: str | None, kind: str, reflected: bool, compared_to: Any) -> bool:
            # Keyword search is each database's own (PostgreSQL's tsvector column, SQLite's FTS5 tables): migration
            # 0002 makes it on purpose, outside the declarations.
            search = (name or "").endswith("text_search") or (name or "").startswith("vector_store_chunks_fts")
            return not search and name != "alembic_version"

        def differences(connection: Any) -> list[Any]:
            options = {"compare_type": True, "include_object": declared}
            context = MigrationContext.configure(connection, opts=options)
            return list(compare_metadata(context, Base.metadata))

        async with db.engine.connect() as connection:
            found = await connection.run_sync(differences)
    finally:
        await db.close()
    assert found == []
