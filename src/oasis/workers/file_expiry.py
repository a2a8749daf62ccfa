"""Deletes files past their `expires_at` (`expires_after` on upload, a batch's `output_expires_after`), as a delete
does: they leave their vector stores and their bytes go. Until then reads already treat them as gone."""

from __future__ import annotations

import time

from oasis.services.files.service import FileService

_PER_ROUND = 100


class FileExpiry:
    def __init__(self, files: FileService, interval_seconds: float = 60.0) -> None:
        self._files = files
        self._interval = interval_seconds
        self._next_at = 0.0  # at once on start

    async def run_next(self, owner: str) -> bool:
        """Deletes expired files when due; reports work while a round finds a full page of them."""
        if time.time() < self._next_at:
            return False
        if await self._files.delete_expired(_PER_ROUND) == _PER_ROUND:
            return True
        self._next_at = time.time() + self._interval
        return False
