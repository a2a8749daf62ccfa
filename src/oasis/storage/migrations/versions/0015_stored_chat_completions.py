"""stored chat completions (`store: true`) and their metadata pairs

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "chat_completions",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("project_id", sa.String(64), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("completion_json", sa.Text(), nullable=False),
        sa.Column("messages_json", sa.Text(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_chat_completions_project_seq", "chat_completions", ["project_id", "seq"])
    op.create_table(
        "chat_completion_metadata",
        sa.Column("completion_seq", _SEQ, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("completion_seq", "key"),
    )
    op.create_index("ix_chat_completion_metadata_pair", "chat_completion_metadata", ["key", "value"])


def downgrade() -> None:
    op.drop_index("ix_chat_completion_metadata_pair", table_name="chat_completion_metadata")
    op.drop_table("chat_completion_metadata")
    op.drop_index("ix_chat_completions_project_seq", table_name="chat_completions")
    op.drop_table("chat_completions")
