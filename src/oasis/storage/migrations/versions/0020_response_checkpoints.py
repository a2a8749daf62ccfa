"""background responses: where a generation had got to between tool calls, so a crash resumes it from there

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# SQLite rebuilds a table to alter it; the rebuilt one must keep AUTOINCREMENT, or row numbers could repeat.
_KEEP = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("responses", table_kwargs=_KEEP) as table:
        table.add_column(sa.Column("checkpoint_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("responses", table_kwargs=_KEEP) as table:
        table.drop_column("checkpoint_json")
