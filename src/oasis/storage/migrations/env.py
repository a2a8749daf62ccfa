"""Alembic environment: runs on the connection that Database.migrate hands over."""

from __future__ import annotations

from alembic import context

from oasis.storage.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("oasis migrations run through oasis.storage.db.Database.migrate")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
