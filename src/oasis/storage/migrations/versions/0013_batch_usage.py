"""batches report the model their lines ask for and the tokens their answered requests used (`model`, `usage`)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


# SQLite rebuilds a table to drop a column; the rebuilt one must keep AUTOINCREMENT, or row numbers could repeat.
_KEEP = {"sqlite_autoincrement": True}
_TOKEN_COLUMNS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens")


def upgrade() -> None:
    with op.batch_alter_table("batches", table_kwargs=_KEEP) as table:
        table.add_column(sa.Column("model", sa.Text(), nullable=True))
        for name in _TOKEN_COLUMNS:
            table.add_column(sa.Column(name, sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("batches", table_kwargs=_KEEP) as table:
        for name in reversed(_TOKEN_COLUMNS):
            table.drop_column(name)
        table.drop_column("model")
