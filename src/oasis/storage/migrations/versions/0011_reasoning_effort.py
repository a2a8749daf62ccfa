"""assistants and runs keep `reasoning_effort` (passed to a reasoning model's chat template)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


# SQLite rebuilds a table to drop a column; the rebuilt one must keep AUTOINCREMENT, or row numbers could repeat.
_KEEP = {"sqlite_autoincrement": True}


def upgrade() -> None:
    for table_name in ("assistants", "runs"):
        with op.batch_alter_table(table_name, table_kwargs=_KEEP) as table:
            table.add_column(sa.Column("reasoning_effort", sa.String(16), nullable=True))


def downgrade() -> None:
    for table_name in ("runs", "assistants"):
        with op.batch_alter_table(table_name, table_kwargs=_KEEP) as table:
            table.drop_column("reasoning_effort")
