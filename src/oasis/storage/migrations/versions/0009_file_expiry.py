"""files that expire (`expires_after` on upload, a batch's `output_expires_after`)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


# SQLite rebuilds a table to drop a column; the rebuilt one must keep AUTOINCREMENT, or row numbers could repeat.
_KEEP = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("files", table_kwargs=_KEEP) as table:
        table.add_column(sa.Column("expires_at", sa.BigInteger(), nullable=True))
        table.create_index("ix_files_expiry", ["deleted_at", "expires_at"])
    with op.batch_alter_table("batches", table_kwargs=_KEEP) as table:
        table.add_column(sa.Column("output_expires_after", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", table_kwargs=_KEEP) as table:
        table.drop_column("output_expires_after")
    with op.batch_alter_table("files", table_kwargs=_KEEP) as table:
        table.drop_index("ix_files_expiry")
        table.drop_column("expires_at")
