"""Removes blobs that no row points to, temporary files of writes that never finished, and the chunks of
deleted vector stores that a crash left behind.

A crash between writing a blob and committing its row, or between a row's tombstone and the blob's deletion,
leaves bytes that nothing will ever read; a killed upload leaves a temporary file. Both are only removed once
older than the grace period, so a write still in flight (blob stored, row not yet committed) is never touched.
Runs at the worker's start and then every `workers.sweep_seconds`; replicas sweeping at once do no harm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from oasis.blobs import BlobStore
from oasis.blobs.base import BLOB_FOLDERS
from oasis.storage import files as file_rows
from oasis.storage import vector_stores as vector_store_rows
from oasis.storage.db import Database

log = logging.getLogger("oasis.blobs")

GRACE_SECONDS = 3600
_PAGE = 500


class BlobSweeper:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        interval_seconds: float,
        expiring: Sequence[Callable[[], Awaitable[int]]] = (),
    ) -> None:
        self._db = db
        self._expiring = list(expiring)  # sweeps of blobs that expire by age (generated images' links)
        self._blobs = blobs
        self._interval = interval_seconds
        self._next_at = 0.0  # at once on start

    async def run_next(self, owner: str) -> bool:
        """Sweeps when due; never reports work, so the worker loop goes back to sleep after it."""
        if time.time() >= self._next_at:
            self._next_at = time.time() + self._interval
            await self.sweep()
        return False

    async def sweep(self, grace_seconds: float = GRACE_SECONDS) -> tuple[int, int]:
        """(orphaned blobs removed, temporary files removed)."""
        cutoff = time.time() - grace_seconds
        temporary = await self._blobs.clear_temporary(cutoff)
        orphans = 0
        for prefix in BLOB_FOLDERS:
            old: list[str] = []
            async for key, modified in self._blobs.keys(prefix):
                if modified < cutoff:
                    old.append(key)
                if len(old) >= _PAGE:
                    orphans += await self._remove_unreferenced(old)
                    old = []
            orphans += await self._remove_unreferenced(old)
        if orphans or temporary:
            log.info("blob sweep removed %d unreferenced blobs and %d unfinished writes", orphans, temporary)
        await self._purge_deleted_stores()
        for sweep_expired in self._expiring:
            expired = await sweep_expired()
            if expired:
                log.info("blob sweep removed %d expired blobs", expired)
        return orphans, temporary

    async def _purge_deleted_stores(self) -> None:
        while True:
            async with self._db.session() as session:
                stores = await vector_store_rows.deleted_stores_with_chunks(session, limit=20)
            if not stores:
                return
            for store_id in stores:
                removed = await vector_store_rows.purge_store_chunks(self._db, store_id)
                log.info("removed %d chunks left behind by deleted vector store %s", removed, store_id)

    async def _remove_unreferenced(self, keys: list[str]) -> int:
        if not keys:
            return 0
        async with self._db.session() as session:
            kept = await file_rows.referenced_blob_keys(session, keys)
        unreferenced = [key for key in keys if key not in kept]
        for key in unreferenced:
            await self._blobs.delete(key)
        return len(unreferenced)
