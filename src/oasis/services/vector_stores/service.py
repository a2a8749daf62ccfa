"""Vector stores, their files and file batches: the 13 operations. Ingestion itself is workers/ingestion.py."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oasis.errors import invalid_request, not_found
from oasis.services.files.service import FileService
from oasis.services.metadata import check_metadata
from oasis.services.vector_stores.chunking import Chunking, chunking_from_request
from oasis.services.vector_stores.text_extraction import InvalidFile, UnsupportedFile, spooled, text_pieces
from oasis.storage import files as file_rows
from oasis.storage import vector_stores as rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Conflict, Database, Session
from oasis.storage.pagination import Page, PageRequest
from oasis.storage.tables import VectorStore, VectorStoreFile, VectorStoreFileBatch

DAY = 86_400
FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")


def check_attributes(attributes: dict[str, Any] | None, param: str = "attributes") -> dict[str, Any]:
    """A file's attributes (for search filters): up to 16 pairs of strings, numbers or booleans."""
    if attributes is None:
        return {}
    if len(attributes) > 16:
        raise invalid_request("'attributes' holds at most 16 key-value pairs.", param=param)
    for key, value in attributes.items():
        if len(key) > 64 or not isinstance(value, str | int | float | bool) or len(str(value)) > 512:
            raise invalid_request(
                "'attributes' keys are at most 64 characters; values are strings (up to 512), numbers or booleans.",
                param=f"{param}.{key}",
            )
    return dict(attributes)


@dataclass(frozen=True)
class BatchFile:
    """A file of a batch with the chunking and attributes it is indexed with."""

    file_id: str
    chunking: dict[str, Any] | None
    attributes: dict[str, Any] | None
    param: str | None = None  # where the file's own settings were given (`files[2]`), for errors


# What one page of a file's content holds at most: a large file's text is read a page at a time, never whole.
MAX_CONTENT_PAGE_CHARS = 4_000_000


def content_page(pieces: Iterator[str], start: int) -> tuple[list[str], int | None]:
    """The pieces from `start` up to a page's worth, and where the next page starts (None at the end)."""
    kept: list[str] = []
    size = 0
    for index, piece in enumerate(pieces):
        if index < start:
            continue
        if kept and size + len(piece) > MAX_CONTENT_PAGE_CHARS:
            return kept, index
        kept.append(piece)
        size += len(piece)
    return kept, None


def _within(prefix: str | None, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def expires_at(store: VectorStore) -> int | None:
    if store.expires_after_days is None:
        return None
    return store.last_active_at + store.expires_after_days * DAY


def is_expired(store: VectorStore) -> bool:
    deadline = expires_at(store)
    return deadline is not None and deadline <= now()


def store_to_wire(store: VectorStore, counts: Counter[str], usage_bytes: int) -> dict[str, Any]:
    status = "expired" if is_expired(store) else "in_progress" if counts["in_progress"] else "completed"
    expires_after = (
        {"anchor": "last_active_at", "days": store.expires_after_days} if store.expires_after_days is not None else None
    )
    return {
        "id": store.id,
        "object": "vector_store",
        "created_at": store.created_at,
        "name": store.name,
        "usage_bytes": usage_bytes,
        "file_counts": _file_counts(counts),
        "status": status,
        "expires_after": expires_after,
        "expires_at": expires_at(store),
        "last_active_at": store.last_active_at,
        "metadata": json.loads(store.metadata_json),
    }


def _file_counts(counts: Counter[str]) -> dict[str, int]:
    return {**{status: counts[status] for status in FILE_STATUSES}, "total": sum(counts[s] for s in FILE_STATUSES)}


def file_to_wire(row: VectorStoreFile) -> dict[str, Any]:
    last_error = {"code": row.last_error_code, "message": row.last_error_message or ""} if row.last_error_code else None
    chunking = Chunking(row.chunking_type, row.chunk_size_tokens, row.chunk_overlap_tokens)
    return {
        "id": row.id,
        "object": "vector_store.file",
        "usage_bytes": row.usage_bytes,
        "created_at": row.created_at,
        "vector_store_id": row.vector_store_id,
        "status": row.status,
        "last_error": last_error,
        "chunking_strategy": chunking.to_wire(),
        "attributes": json.loads(row.attributes_json),
    }


def batch_to_wire(batch: VectorStoreFileBatch, counts: Counter[str]) -> dict[str, Any]:
    if batch.cancelled_at:
        status = "cancelled"  # its unfinished files were cancelled in the same transaction
    elif counts["in_progress"]:
        status = "in_progress"
    elif counts["failed"] and counts["failed"] == sum(counts.values()):
        status = "failed"
    else:
        status = "completed"
    return {
        "id": batch.id,
        "object": "vector_store.files_batch",
        "created_at": batch.created_at,
        "vector_store_id": batch.vector_store_id,
        "status": status,
        "file_counts": _file_counts(counts),
    }


def _store_not_found(store_id: str) -> Exception:
    return not_found(f"No vector store found with id '{store_id}'.", param="vector_store_id")


class VectorStoreService:
    def __init__(
        self,
        db: Database,
        default_embedding_model: str,
        wake_workers: Callable[[], None],
        files: FileService,
        spool_dir: Path | None = None,
    ) -> None:
        self._db = db
        self._files = files  # reads an attached file's content again (`file_content`)
        self._spool_dir = spool_dir  # where a large file waits while its text is read
        self._embedding_model = default_embedding_model
        # Nudges the in-process ingestion worker; workers elsewhere find new jobs when they poll.
        self._wake_workers = wake_workers

    # --- stores -----------------------------------------------------------------------------------------

    async def create(
        self,
        project_id: str,
        *,
        name: str | None,
        file_ids: list[str],
        expires_after_days: int | None,
        metadata: dict[str, Any] | None,
        chunking: dict[str, Any] | None,
    ) -> dict[str, Any]:
        async with self._db.session() as session:
            store = await self.create_in(
                session,
                project_id,
                name=name,
                file_ids=file_ids,
                expires_after_days=expires_after_days,
                metadata=metadata,
                chunking=chunking,
            )
            await session.commit()
        if file_ids:
            self._wake_workers()
        return await self.retrieve(project_id, store.id)

    async def create_in(
        self,
        session: Session,
        project_id: str,
        *,
        name: str | None,
        file_ids: list[str],
        expires_after_days: int | None,
        metadata: dict[str, Any] | None,
        chunking: dict[str, Any] | None,
        param_prefix: str = "",
    ) -> VectorStore:
        """A new store with its files, inside the caller's transaction (the caller wakes the workers after it
        commits). `param_prefix` places the request's fields in a bigger body (a thread's helper store)."""
        strategy = chunking_from_request(chunking, param=f"{param_prefix}chunking_strategy")
        clean_metadata = check_metadata(metadata, param=f"{param_prefix}metadata")
        stamp = now()
        store = VectorStore(
            id=new_id("vs_"),
            project_id=project_id,
            name=name or "",
            created_at=stamp,
            metadata_json=json.dumps(clean_metadata),
            embedding_model=self._embedding_model,
            expires_after_days=expires_after_days,
            last_active_at=stamp,
            content_version=0,
        )
        await self._check_files(session, project_id, file_ids)
        session.add(store)
        await session.flush()
        for file_id in dict.fromkeys(file_ids):
            session.add(self._new_file_row(store, file_id, strategy, {}, batch_id=None))
        await self._still_there(session, project_id, file_ids)
        return store

    async def add_files_in(self, session: Session, project_id: str, store_id: str, file_ids: list[str]) -> None:
        """Attaches the files not yet in the store, with the default chunking, inside the caller's transaction."""
        # Locked: messages of two threads sharing the store may attach the same file at once, and the second
        # must see the first's row rather than break the unique index (the caller's transaction is not retried).
        await self._check_files(session, project_id, file_ids)
        store = await self._locked_store(session, project_id, store_id)
        strategy = chunking_from_request(None)
        for file_id in dict.fromkeys(file_ids):
            if await rows.get_file(session, project_id, store_id, file_id) is None:
                session.add(self._new_file_row(store, file_id, strategy, {}, batch_id=None))
        await self._still_there(session, project_id, file_ids)

    def wake(self) -> None:
        """Tells the in-process ingestion worker that files wait (after a commit that attached some)."""
        self._wake_workers()

    async def list_stores(self, project_id: str, page: PageRequest) -> Page[dict[str, Any]]:
        async with self._db.session() as session:
            found = await rows.list_stores(session, project_id, page)
            stats = await rows.file_stats(session, (store.id for store in found.items))
        items = [store_to_wire(store, *stats[store.id]) for store in found.items]
        return Page(items=items, has_more=found.has_more)

    async def retrieve(self, project_id: str, store_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            store = await self._store(session, project_id, store_id)
            stats = await rows.file_stats(session, [store.id])
        return store_to_wire(store, *stats[store.id])

    async def modify(
        self,
        project_id: str,
        store_id: str,
        *,
        name: str | None,
        expires_after_days: int | None,
        clear_expiry: bool,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        async with self._db.session() as session:
            store = await self._store(session, project_id, store_id)
            if name is not None:
                store.name = name
            if metadata is not None:
                store.metadata_json = json.dumps(check_metadata(metadata))
            if expires_after_days is not None or clear_expiry:
                store.expires_after_days = expires_after_days
                store.last_active_at = now()
            await session.commit()
        return await self.retrieve(project_id, store_id)

    async def delete(self, project_id: str, store_id: str) -> str:
        async with self._db.session() as session:
            store = await self._store(session, project_id, store_id)
            stamp = now()
            store.deleted_at = stamp
            # The files' rows go with it, so a worker holding one of them stops at its next step.
            await rows.tombstone_store_files(session, store_id, stamp)
            await session.commit()
        # After the tombstone (nothing searches a deleted store), in steps; what a crash leaves, the sweeper takes.
        await rows.purge_store_chunks(self._db, store_id)
        return store_id

    async def store_row(self, project_id: str, store_id: str) -> VectorStore:
        async with self._db.session() as session:
            return await self._store(session, project_id, store_id)

    # --- files ------------------------------------------------------------------------------------------

    async def add_file(
        self,
        project_id: str,
        store_id: str,
        file_id: str,
        *,
        chunking: dict[str, Any] | None,
        attributes: dict[str, Any] | None,
    ) -> dict[str, Any]:
        strategy = chunking_from_request(chunking)
        clean_attributes = check_attributes(attributes)
        try:
            async with self._db.session() as session:
                await self._check_files(session, project_id, [file_id])
                store = await self._locked_store(session, project_id, store_id)
                row = await rows.get_file(session, project_id, store_id, file_id)
                if row is not None and row.status not in ("failed", "cancelled"):
                    return file_to_wire(row)
                if row is not None:  # adding a failed or cancelled file again tries it again
                    row.deleted_at = now()
                    await rows.drop_chunks(session, file_seq=row.seq)
                    await session.flush()  # out of the unique index before the new attachment arrives
                row = self._new_file_row(store, file_id, strategy, clean_attributes, batch_id=None)
                session.add(row)
                await self._still_there(session, project_id, [file_id])
                await session.commit()
        except Conflict:
            # A concurrent add of the same file won the unique index: its attachment is the answer.
            async with self._db.session() as session:
                existing = await rows.get_file(session, project_id, store_id, file_id)
            if existing is None:
                raise
            return file_to_wire(existing)
        self._wake_workers()
        return file_to_wire(row)

    async def list_files(
        self, project_id: str, store_id: str, page: PageRequest, status: str | None, batch_id: str | None = None
    ) -> Page[dict[str, Any]]:
        if status is not None and status not in FILE_STATUSES:
            raise invalid_request(f"'filter' must be one of {', '.join(FILE_STATUSES)}.", param="filter")
        async with self._db.session() as session:
            await self._store(session, project_id, store_id)
            if batch_id is not None:
                await self._batch(session, project_id, store_id, batch_id)
            found = await rows.list_files(session, store_id, page, status, batch_id)
        return Page(items=[file_to_wire(row) for row in found.items], has_more=found.has_more)

    async def retrieve_file(self, project_id: str, store_id: str, file_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            await self._store(session, project_id, store_id)
            return file_to_wire(await self._file(session, project_id, store_id, file_id))

    async def file_content(self, project_id: str, store_id: str, file_id: str, page: str | None) -> dict[str, Any]:
        """The attached file's text as file_search reads it, in pieces (about a megabyte of text, a PDF page), up to
        MAX_CONTENT_PAGE_CHARS a page; `page` is a page's `next_page`."""
        if page is not None and not page.isdigit():
            raise invalid_request("'page' must be a 'next_page' this endpoint gave.", param="page")
        start = 0 if page is None else int(page)
        async with self._db.session() as session:
            await self._store(session, project_id, store_id)
            await self._file(session, project_id, store_id, file_id)
        content = await self._files.content(project_id, file_id)
        with spooled(self._spool_dir) as spool:
            async for chunk in content.chunks:
                await asyncio.to_thread(spool.write, chunk)
            spool.seek(0)
            try:
                pieces, following = await asyncio.to_thread(content_page, text_pieces(content.filename, spool), start)
            except UnsupportedFile as exc:
                raise invalid_request(str(exc), param="file_id", code="unsupported_file") from None
            except InvalidFile as exc:
                raise invalid_request(str(exc), param="file_id", code="invalid_file") from None
        return {
            "object": "vector_store.file_content.page",
            "data": [{"type": "text", "text": piece} for piece in pieces if piece],
            "has_more": following is not None,
            "next_page": None if following is None else str(following),
        }

    async def update_file(
        self, project_id: str, store_id: str, file_id: str, attributes: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Replaces the file's attributes (what search filters read); null clears them."""
        clean = check_attributes(attributes)
        async with self._db.session() as session:
            await self._store(session, project_id, store_id)
            row = await self._file(session, project_id, store_id, file_id)
            await rows.bump_version(session, store_id)  # the store's row before the file's, as everywhere
            row.attributes_json = json.dumps(clean)
            await session.commit()
            return file_to_wire(row)

    async def delete_file(self, project_id: str, store_id: str, file_id: str) -> str:
        async with self._db.session() as session:
            await self._store(session, project_id, store_id)
            row = await self._file(session, project_id, store_id, file_id)
            await rows.bump_version(session, store_id)  # the store's row before the file's, as everywhere
            row.deleted_at = now()
            await rows.drop_chunks(session, file_seq=row.seq)
            await session.commit()
        return file_id

    # --- file batches -----------------------------------------------------------------------------------

    async def create_batch(self, project_id: str, store_id: str, files: list[BatchFile]) -> dict[str, Any]:
        """The files attached as one batch, each with its chunking and attributes (a file named twice: its first)."""
        settings: dict[str, tuple[Chunking, dict[str, Any]]] = {}
        for file in files:
            if file.file_id not in settings:
                strategy = chunking_from_request(file.chunking, param=_within(file.param, "chunking_strategy"))
                attributes = check_attributes(file.attributes, param=_within(file.param, "attributes"))
                settings[file.file_id] = (strategy, attributes)
        batch = VectorStoreFileBatch(
            id=new_id("vsfb_"), project_id=project_id, vector_store_id=store_id, created_at=now()
        )
        unique = list(settings)
        for attempt in range(3):
            try:
                await self._attach_batch(project_id, store_id, batch, settings)
                break
            except Conflict:
                # A concurrent add attached one of the files between our read and our commit: take it over too.
                if attempt == 2:
                    raise
        counts = Counter({"in_progress": len(unique)})
        self._wake_workers()
        return batch_to_wire(batch, counts)

    async def _attach_batch(
        self,
        project_id: str,
        store_id: str,
        batch: VectorStoreFileBatch,
        settings: dict[str, tuple[Chunking, dict[str, Any]]],
    ) -> None:
        file_ids = list(settings)
        async with self._db.session() as session:
            await self._check_files(session, project_id, file_ids)
            store = await self._locked_store(session, project_id, store_id)
            session.add(batch)
            # Files attached before: the batch takes them over and indexes them again with its settings.
            replaced = await rows.attached_files(session, store_id, file_ids)
            for existing in replaced:
                existing.deleted_at = now()
                await rows.drop_chunks(session, file_seq=existing.seq)
            if replaced:
                await rows.bump_version(session, store_id)
                await session.flush()  # the old attachments leave the unique index before the new ones arrive
            session.add_all(
                self._new_file_row(store, file_id, strategy, attributes, batch_id=batch.id)
                for file_id, (strategy, attributes) in settings.items()
            )
            await self._still_there(session, project_id, file_ids)
            await session.commit()

    async def retrieve_batch(self, project_id: str, store_id: str, batch_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            await self._store(session, project_id, store_id)  # a deleted store's batches went with it
            batch = await self._batch(session, project_id, store_id, batch_id)
            counts = await rows.batch_counts(session, batch_id)
        return batch_to_wire(batch, counts)

    async def cancel_batch(self, project_id: str, store_id: str, batch_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            await self._store(session, project_id, store_id)
            batch = await self._batch(session, project_id, store_id, batch_id)
            # A batch whose files are all done stays as it ended: there is nothing left to cancel.
            if batch.cancelled_at is None and (await rows.batch_counts(session, batch_id))["in_progress"]:
                batch.cancelled_at = now()
                # Files not finished stop here; a worker in the middle of one sees this at its next commit.
                for file_seq in await rows.cancel_unfinished_files(session, batch_id):
                    await rows.drop_chunks(session, file_seq=file_seq)
                await session.commit()
            counts = await rows.batch_counts(session, batch_id)
        return batch_to_wire(batch, counts)

    # --- helpers ----------------------------------------------------------------------------------------

    @staticmethod
    def _new_file_row(
        store: VectorStore, file_id: str, strategy: Chunking, attributes: dict[str, Any], batch_id: str | None
    ) -> VectorStoreFile:
        return VectorStoreFile(
            id=file_id,
            project_id=store.project_id,
            vector_store_id=store.id,
            batch_id=batch_id,
            created_at=now(),
            status="in_progress",
            usage_bytes=0,
            chunk_size_tokens=strategy.max_chunk_size_tokens,
            chunk_overlap_tokens=strategy.chunk_overlap_tokens,
            chunking_type=strategy.type,
            attributes_json=json.dumps(attributes),
            chunks_done=0,
            attempts=0,
        )

    @staticmethod
    async def _locked_store(session: Any, project_id: str, store_id: str) -> VectorStore:
        """The store, its row locked until the transaction ends: every path that attaches files takes it, so
        that concurrent attaches of one file (from the API, a batch, a message) see each other's rows."""
        store = await rows.get_store(session, project_id, store_id, for_update=True)
        if store is None:
            raise _store_not_found(store_id)
        return store

    @staticmethod
    async def _store(session: Any, project_id: str, store_id: str) -> VectorStore:
        store = await rows.get_store(session, project_id, store_id)
        if store is None:
            raise _store_not_found(store_id)
        return store

    @staticmethod
    async def _file(session: Any, project_id: str, store_id: str, file_id: str) -> VectorStoreFile:
        row = await rows.get_file(session, project_id, store_id, file_id)
        if row is None:
            raise not_found(f"No file found with id '{file_id}' in vector store '{store_id}'.", param="file_id")
        return row

    @staticmethod
    async def _batch(session: Any, project_id: str, store_id: str, batch_id: str) -> VectorStoreFileBatch:
        batch = await rows.get_batch(session, project_id, store_id, batch_id)
        if batch is None:
            raise not_found(f"No file batch found with id '{batch_id}'.", param="batch_id")
        return batch

    @classmethod
    async def _still_there(cls, session: Any, project_id: str, file_ids: list[str]) -> None:
        """Checks the files again once the attachments are written (flushed): on SQLite the first check ran
        before this transaction took the write lock, and a delete may have committed since; it would not have
        seen these attachments to take them out."""
        await session.flush()
        await cls._check_files(session, project_id, file_ids)

    @staticmethod
    async def _check_files(session: Any, project_id: str, file_ids: list[str]) -> None:
        """404 for a file that is not there; the rest locked until the transaction ends: a delete of one waits,
        then finds the attachment made of it and takes it out (files' rows before the store's, as a delete)."""
        found = await file_rows.existing_file_ids(session, project_id, file_ids, for_update=True)
        missing = next((file_id for file_id in file_ids if file_id not in found), None)
        if missing is not None:
            raise not_found(f"No such File object: {missing}", param="file_ids")
