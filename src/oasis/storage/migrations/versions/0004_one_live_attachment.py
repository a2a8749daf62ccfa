"""one live attachment of a file per vector store

Two concurrent adds of the same file used to store it (and its chunks) twice. Duplicates left by that are
tombstoned (the first attachment stays) before the partial unique index is built.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    duplicates = (
        "SELECT seq FROM vector_store_files WHERE deleted_at IS NULL AND seq NOT IN "
        "(SELECT MIN(seq) FROM vector_store_files WHERE deleted_at IS NULL GROUP BY vector_store_id, id)"
    )
    op.execute(sa.text(f"DELETE FROM vector_store_chunks WHERE file_seq IN ({duplicates})"))
    op.execute(sa.text(f"UPDATE vector_store_files SET deleted_at = {int(time.time())} WHERE seq IN ({duplicates})"))
    op.create_index(
        "uq_vector_store_files_live",
        "vector_store_files",
        ["vector_store_id", "id"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_vector_store_files_live", table_name="vector_store_files")
