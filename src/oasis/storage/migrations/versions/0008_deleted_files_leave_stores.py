"""deleted files leave the vector stores that held them

Deleting a file used to leave its attachments and chunks in place, so search kept returning its text. Such
attachments are tombstoned, their chunks dropped and their stores' content versions moved on (as a file
delete now does).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_ATTACHED_TO_DELETED = (
    "FROM vector_store_files WHERE deleted_at IS NULL AND id IN (SELECT id FROM files WHERE deleted_at IS NOT NULL)"
)


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE vector_stores SET content_version = content_version + 1 "
            f"WHERE id IN (SELECT vector_store_id {_ATTACHED_TO_DELETED})"
        )
    )
    op.execute(sa.text(f"DELETE FROM vector_store_chunks WHERE file_seq IN (SELECT seq {_ATTACHED_TO_DELETED})"))
    stamp = int(time.time())
    op.execute(
        sa.text(f"UPDATE vector_store_files SET deleted_at = {stamp} WHERE seq IN (SELECT seq {_ATTACHED_TO_DELETED})")
    )


def downgrade() -> None:
    pass  # the text of deleted files is gone; nothing to put back
