"""assistants, threads, thread messages, runs (each row is its own job) and run steps

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ACTIVE = sa.text("status IN ('queued', 'in_progress', 'requires_action', 'cancelling')")


def _keys() -> list[sa.Column[Any]]:
    return [
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=64), sa.ForeignKey("projects.id"), nullable=False),
    ]


def _closing() -> list[sa.schema.SchemaItem]:
    return [sa.PrimaryKeyConstraint("seq"), sa.UniqueConstraint("id")]


def upgrade() -> None:
    op.create_table(
        "assistants",
        *_keys(),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=True),
        sa.Column("tools_json", sa.Text(), nullable=False),
        sa.Column("tool_resources_json", sa.Text(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("top_p", sa.Float(), nullable=True),
        sa.Column("response_format_json", sa.Text(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        *_closing(),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_assistants_project_seq", "assistants", ["project_id", "seq"])
    op.create_table(
        "threads",
        *_keys(),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("tool_resources_json", sa.Text(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        *_closing(),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_threads_project_seq", "threads", ["project_id", "seq"])
    op.create_table(
        "thread_messages",
        *_keys(),
        sa.Column("thread_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("content_json", sa.Text(), nullable=False),
        sa.Column("attachments_json", sa.Text(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("assistant_id", sa.String(length=64), nullable=True),
        sa.Column("run_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("incomplete_reason", sa.String(length=32), nullable=True),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("incomplete_at", sa.BigInteger(), nullable=True),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        *_closing(),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_thread_messages_thread_seq", "thread_messages", ["thread_id", "seq"])
    op.create_index("ix_thread_messages_run_id", "thread_messages", ["run_id"])
    op.create_table(
        "runs",
        *_keys(),
        sa.Column("thread_id", sa.String(length=64), nullable=False),
        sa.Column("assistant_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("instructions", sa.Text(), nullable=False),
        sa.Column("additional_instructions", sa.Text(), nullable=True),
        sa.Column("tools_json", sa.Text(), nullable=False),
        sa.Column("tool_resources_json", sa.Text(), nullable=False),
        sa.Column("metadata_json", sa.Text(), nullable=False),
        sa.Column("temperature", sa.Float(), nullable=True),
        sa.Column("top_p", sa.Float(), nullable=True),
        sa.Column("max_prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("max_completion_tokens", sa.Integer(), nullable=True),
        sa.Column("truncation_json", sa.Text(), nullable=False),
        sa.Column("tool_choice_json", sa.Text(), nullable=False),
        sa.Column("response_format_json", sa.Text(), nullable=False),
        sa.Column("parallel_tool_calls", sa.Boolean(), nullable=False),
        sa.Column("required_action_json", sa.Text(), nullable=True),
        sa.Column("last_error_json", sa.Text(), nullable=True),
        sa.Column("incomplete_reason", sa.String(length=32), nullable=True),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("cancelled_at", sa.BigInteger(), nullable=True),
        sa.Column("failed_at", sa.BigInteger(), nullable=True),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        *_closing(),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_runs_thread_seq", "runs", ["thread_id", "seq"])
    op.create_index("ix_runs_jobs", "runs", ["status", "lease_expires_at"])
    op.create_index(
        "uq_runs_one_active", "runs", ["thread_id"], unique=True, sqlite_where=_ACTIVE, postgresql_where=_ACTIVE
    )
    op.create_table(
        "run_steps",
        *_keys(),
        sa.Column("thread_id", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("assistant_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("step_details_json", sa.Text(), nullable=False),
        sa.Column("last_error_json", sa.Text(), nullable=True),
        sa.Column("after_message_seq", sa.BigInteger(), nullable=False),
        sa.Column("cancelled_at", sa.BigInteger(), nullable=True),
        sa.Column("failed_at", sa.BigInteger(), nullable=True),
        sa.Column("completed_at", sa.BigInteger(), nullable=True),
        sa.Column("expired_at", sa.BigInteger(), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        *_closing(),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_run_steps_run_seq", "run_steps", ["run_id", "seq"])
    op.create_index("ix_run_steps_thread", "run_steps", ["thread_id"])


def downgrade() -> None:
    for table in ("run_steps", "runs", "thread_messages", "threads", "assistants"):
        op.drop_table(table)
