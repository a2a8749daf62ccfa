"""One vector-store file's ingestion: extract text, chunk, embed in batches, commit each batch with its progress.

The vector-store-file row is the job. Every step is written only while this worker still holds the lease and the
row is still wanted (not cancelled, not deleted), in the same transaction as the progress counter, so a job
resumed after a crash starts at the first chunk not yet committed and no chunk is stored twice.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select, update

from oasis.blobs import BlobNotFound, BlobStore
from oasis.engines.embedding import EmbeddingEngine
from oasis.engines.text import EngineBusy
from oasis.errors import OasisError
from oasis.metrics import JOB_DURATION
from oasis.services.embeddings.service import EmbeddingService
from oasis.services.vector_stores.chunking import split_stream
from oasis.services.vector_stores.text_extraction import (
    InvalidFile,
    UnsupportedFile,
    check_supported,
    spooled,
    text_pieces,
)
from oasis.storage import files as file_rows
from oasis.storage import vector_stores as rows
from oasis.storage.db import Database
from oasis.storage.leases import held_by, lease_until
from oasis.storage.tables import VectorStore, VectorStoreChunk, VectorStoreFile
from oasis.workers.leases import JobClaims, LeaseKeeper

log = logging.getLogger("oasis.ingestion")

EMBED_STEP = 32  # chunks embedded and committed together
MAX_ATTEMPTS = 3


class _Stop(Exception):
    """The job is no longer ours: cancelled, deleted, or its lease was taken over."""


class _Failed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _next_step(chunks: Iterator[str]) -> list[str]:
    """The next EMBED_STEP chunks (fewer at the end); extraction errors surface here as _Failed."""
    try:
        return list(itertools.islice(chunks, EMBED_STEP))
    except UnsupportedFile as exc:
        raise _Failed("unsupported_file", str(exc)) from None
    except InvalidFile as exc:
        raise _Failed("invalid_file", str(exc)) from None


class IngestionRunner:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        embeddings: EmbeddingService,
        lease_seconds: float,
        spool_dir: Path | None = None,
    ) -> None:
        self._spool_dir = spool_dir
        self._db = db
        self._blobs = blobs
        self._embeddings = embeddings
        self._lease_seconds = lease_seconds
        self.claims = JobClaims(db, VectorStoreFile, rows.WAITING_FILE)

    async def run_next(self, owner: str) -> bool:
        """Leases one waiting file and ingests it; False when there was none."""
        seq = await self.claims.lease_one(owner=owner, seconds=self._lease_seconds)
        if seq is None:
            return False
        started = time.perf_counter()
        outcome = "stopped"
        try:
            async with LeaseKeeper(self._db, VectorStoreFile, seq, owner, self._lease_seconds):
                await self._ingest(seq, owner)
            outcome = "completed"
        except asyncio.CancelledError:  # a shutdown, or a kill as the tests make one: the loop decides which
            self.claims.cut_off(seq)
            raise
        except _Stop:
            log.info("ingestion of row %s stopped: cancelled, deleted or taken over", seq)
        except _Failed as failure:
            outcome = "failed"
            log.warning("ingestion of row %s failed: %s", seq, failure.message)
            await self._finish(seq, owner, "failed", failure.code, failure.message)
        except Exception as exc:
            outcome = "error"
            log.exception("ingesting vector store file (row %s) failed", seq)
            await self._retry_or_fail(seq, owner, f"{type(exc).__name__}: {exc}")
        JOB_DURATION.labels("ingestion", outcome).observe(time.perf_counter() - started)
        return True

    async def _ingest(self, seq: int, owner: str) -> None:
        async with self._db.session() as session:
            job = await session.get(VectorStoreFile, seq)
            if job is None:
                raise _Stop
            store = await session.scalar(select(VectorStore).where(VectorStore.id == job.vector_store_id))
            stored = await file_rows.get_file(session, job.project_id, job.id)
        if store is None:
            raise _Stop
        log.info(
            "ingesting %s into %s (attempt %d, from chunk %d)",
            job.id,
            job.vector_store_id,
            job.attempts,
            job.chunks_done,
        )
        if stored is None:
            raise _Failed("invalid_file", f"The file {job.id} was deleted before it could be indexed.")
        if job.attempts > MAX_ATTEMPTS:
            # Leased again and again without progress in between: each time the process ended (a crash, a kill
            # for memory) rather than raise. A file that brings the worker down must not do so for ever.
            raise _Failed(
                "server_error",
                f"The worker stopped {job.attempts - 1} times while indexing this file without making progress.",
            )
        try:
            check_supported(stored.filename)
        except UnsupportedFile as exc:
            raise _Failed("unsupported_file", str(exc)) from None
        try:
            engine = self._embeddings.engine(store.embedding_model)
        except OasisError as exc:
            if exc.status == 503 and exc.code != "model_failed":
                raise  # still loading: try again
            raise _Failed("server_error", f"Embedding model {store.embedding_model!r}: {exc.message}") from None
        # The file goes to a temporary file (in memory while small), then flows through text extraction and
        # chunking a step at a time: neither the file nor its text is held whole.
        with spooled(self._spool_dir) as spool:
            try:
                async for piece in self._blobs.read(stored.blob_key):
                    await asyncio.to_thread(spool.write, piece)
            except BlobNotFound:
                raise _Failed("invalid_file", f"The content of {job.id} is missing.") from None
            spool.seek(0)
            chunks = split_stream(
                text_pieces(stored.filename, spool),
                job.chunk_size_tokens,
                job.chunk_overlap_tokens,
            )
            position = 0
            while texts := await asyncio.to_thread(_next_step, chunks):
                if position >= job.chunks_done:  # a resumed job skips what an earlier attempt committed
                    vectors = await self._embed_when_free(engine, texts)
                    await self._commit_step(job, owner, position, texts, vectors)
                position += len(texts)
        if position == 0:
            raise _Failed("invalid_file", "The file contains no text to index.")
        await self._finish(seq, owner, "completed", None, None)
        log.info("ingested %s into %s: %d chunks", job.id, job.vector_store_id, position)

    @staticmethod
    async def _embed_when_free(engine: EmbeddingEngine, texts: list[str]) -> np.ndarray:
        """A full embedding queue (online requests first) is a wait, not a failed attempt."""
        while True:
            try:
                return await engine.embed(texts, "passage")
            except EngineBusy as busy:
                await asyncio.sleep(busy.retry_after)

    async def _commit_step(
        self, job: VectorStoreFile, owner: str, start: int, texts: list[str], vectors: np.ndarray
    ) -> None:
        size = sum(len(text.encode()) for text in texts) + vectors.astype("<f4").nbytes
        async with self._db.session() as session:
            moved = await session.execute(
                update(VectorStoreFile)
                .where(
                    *held_by(VectorStoreFile, job.seq, owner),
                    *rows.WAITING_FILE,
                    VectorStoreFile.chunks_done == start,
                )
                # progress: the leases before this one count no more towards giving up
                .values(chunks_done=start + len(texts), usage_bytes=VectorStoreFile.usage_bytes + size, attempts=1)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                await session.rollback()
                raise _Stop
            session.add_all(
                VectorStoreChunk(
                    vector_store_id=job.vector_store_id,
                    file_seq=job.seq,
                    file_id=job.id,
                    position=start + offset,
                    text=text,
                    embedding=vector.astype("<f4").tobytes(),
                )
                for offset, (text, vector) in enumerate(zip(texts, vectors, strict=True))
            )
            await session.commit()

    async def _finish(self, seq: int, owner: str, status: str, code: str | None, message: str | None) -> None:
        async with self._db.session() as session:
            store_id = await session.scalar(select(VectorStoreFile.vector_store_id).where(VectorStoreFile.seq == seq))
            if store_id is None:
                return
            # The store's row before the file's, as a store's delete takes them: no circular wait on PostgreSQL.
            await rows.bump_version(session, store_id)
            values: dict[str, Any] = {
                "status": status,
                "last_error_code": code,
                "last_error_message": message,
                "lease_owner": None,
                "lease_expires_at": None,
            }
            if status != "completed":
                values["usage_bytes"] = 0  # its chunks go
            done = await session.execute(
                update(VectorStoreFile)
                .where(*held_by(VectorStoreFile, seq, owner), *rows.WAITING_FILE)
                .values(**values)
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                await session.rollback()
                return
            if status != "completed":
                await rows.drop_chunks(session, file_seq=seq)
            await session.commit()

    async def _retry_or_fail(self, seq: int, owner: str, reason: str) -> None:
        async with self._db.session() as session:
            job = await session.get(VectorStoreFile, seq)
            attempts = job.attempts if job is not None else MAX_ATTEMPTS
        if attempts >= MAX_ATTEMPTS:
            await self._finish(seq, owner, "failed", "server_error", f"Indexing failed {attempts} times: {reason}")
            return
        async with self._db.session() as session:
            # Hand the job back after a short pause; the next lease counts as another attempt.
            await session.execute(
                update(VectorStoreFile)
                .where(*held_by(VectorStoreFile, seq, owner))
                .values(lease_owner=None, lease_expires_at=lease_until(2))
            )
            await session.commit()
