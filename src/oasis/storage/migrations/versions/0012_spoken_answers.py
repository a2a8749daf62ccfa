"""spoken chat answers keep their transcript until they expire (`message.audio`)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spoken_answers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("project_id", sa.String(64), sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("transcript", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_spoken_answers_expires_at", "spoken_answers", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_spoken_answers_expires_at", table_name="spoken_answers")
    op.drop_table("spoken_answers")
