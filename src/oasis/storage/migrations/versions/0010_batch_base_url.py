"""batches keep the address their creator reached oasis at (links in image answers)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


# SQLite rebuilds a table to drop a column; the rebuilt one must keep AUTOINCREMENT, or row numbers could repeat.
_KEEP = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("batches", table_kwargs=_KEEP) as table:
        table.add_column(sa.Column("base_url", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batches", table_kwargs=_KEEP) as table:
        table.drop_column("base_url")
