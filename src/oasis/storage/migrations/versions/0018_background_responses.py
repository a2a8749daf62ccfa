"""background responses: a response's status and lease, and the events a client streams again

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# SQLite rebuilds a table to alter it; the rebuilt one must keep AUTOINCREMENT, or row numbers could repeat.
_KEEP = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("responses", table_kwargs=_KEEP) as table:
        table.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="completed"))
        table.add_column(sa.Column("background", sa.Boolean(), nullable=False, server_default=sa.false()))
        table.add_column(sa.Column("request_json", sa.Text(), nullable=True))
        table.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        table.add_column(sa.Column("lease_owner", sa.String(64), nullable=True))
        table.add_column(sa.Column("lease_expires_at", sa.Float(), nullable=True))
        table.add_column(sa.Column("next_event", sa.Integer(), nullable=False, server_default="0"))
        table.create_index("ix_responses_jobs", ["status", "lease_expires_at"])
    op.create_table(
        "response_events",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("response_id", sa.String(64), nullable=False),
        sa.Column("generation", sa.String(64), nullable=False),
        sa.Column("sequence_number", sa.Integer(), nullable=False),
        sa.Column("event_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_response_events_response", "response_events", ["response_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_response_events_response", table_name="response_events")
    op.drop_table("response_events")
    with op.batch_alter_table("responses", table_kwargs=_KEEP) as table:
        table.drop_index("ix_responses_jobs")
        for name in (
            "next_event",
            "lease_expires_at",
            "lease_owner",
            "attempts",
            "request_json",
            "background",
            "status",
        ):
            table.drop_column(name)
