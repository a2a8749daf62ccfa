"""The Files API: streamed uploads into the blob store, checked JSONL, byte-exact downloads."""

from __future__ import annotations

import mimetypes
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO

import anyio

from oasis.blobs import BlobNotFound, BlobStore
from oasis.errors import OasisError, invalid_request, not_found, too_large
from oasis.protocol.extensions import UPLOAD_PURPOSES, FileObject
from oasis.services.files.checks import LINE_CHECKS, MAX_BATCH_FILE_BYTES
from oasis.storage import batches as batch_rows
from oasis.storage import files as file_rows
from oasis.storage import fine_tuning as fine_tuning_rows
from oasis.storage import vector_stores as vector_store_rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Conflict, Database, Session
from oasis.storage.pagination import Page, PageRequest
from oasis.storage.tables import StoredFile

_CHUNK = 1 << 20
_CONTENT_TYPES = {".jsonl": "application/jsonl", ".json": "application/json", ".md": "text/markdown"}


@dataclass(frozen=True)
class FileContent:
    filename: str
    content_type: str
    size: int
    chunks: AsyncIterator[bytes]


def to_wire(row: StoredFile) -> FileObject:
    return FileObject(
        id=row.id,
        object="file",
        bytes=row.bytes,
        created_at=row.created_at,
        filename=row.filename,
        purpose=row.purpose,  # type: ignore[arg-type]
        status=row.status,  # type: ignore[arg-type]
        status_details=row.status_details,
        expires_at=row.expires_at,
    )


# Written in the transaction that stores a file's row (what else must hold for the file to be stored); False
# undoes the file: NotStored is raised and its bytes go.
AlongWithFile = Callable[[Session], Awaitable[bool]]


class NotStored(Exception):
    """What had to be written with the file could not be: the file was not stored."""


def _file_not_found(file_id: str) -> OasisError:
    return not_found(f"No such File object: {file_id}", param="id")


class FileService:
    def __init__(
        self, db: Database, blobs: BlobStore, max_upload_bytes: int, batch_expiry_seconds: int | None = None
    ) -> None:
        """`batch_expiry_seconds`: how long a `batch` upload that names no `expires_after` lives (None: kept)."""
        self._batch_expiry_seconds = batch_expiry_seconds
        self._db = db
        self._blobs = blobs
        self.max_upload_bytes = max_upload_bytes

    async def upload(
        self,
        project_id: str,
        *,
        purpose: str,
        filename: str,
        source: BinaryIO,
        size: int,
        expires_after: int | None = None,
        file_id: str | None = None,
        max_bytes: int | None = None,
        along: AlongWithFile | None = None,
    ) -> FileObject:
        """`expires_after`: seconds after its creation that the file expires (None: kept until deleted, but for
        `batch` files, which expire after the configured time, as OpenAI's do after 30 days). `file_id`: an id
        fixed by the caller (an upload sent in parts: a second file under it is a Conflict); `max_bytes`: its
        size limit, when not a single request's; `along`: written in the file row's transaction."""
        if purpose not in UPLOAD_PURPOSES:
            raise invalid_request(
                f"'{purpose}' is not one of {', '.join(map(repr, UPLOAD_PURPOSES))} - 'purpose'",
                param="purpose",
            )
        limit = self.max_upload_bytes if max_bytes is None else max_bytes
        if size > limit:
            raise too_large(
                f"File is {size} bytes; the largest upload this server accepts is {limit} bytes.", param="file"
            )
        if purpose == "batch" and size > MAX_BATCH_FILE_BYTES:
            raise invalid_request(
                f"File is {size} bytes; a batch input file may be at most {MAX_BATCH_FILE_BYTES} bytes (200 MB).",
                param="file",
            )
        check = LINE_CHECKS.get(purpose)
        if check is not None:
            source.seek(0)
            await anyio.to_thread.run_sync(check, source)
        if purpose == "batch" and expires_after is None:
            expires_after = self._batch_expiry_seconds
        source.seek(0)
        return await self.store_stream(
            project_id,
            purpose=purpose,
            filename=filename,
            chunks=read_chunks(source),
            file_id=file_id or new_id("file-"),
            # each attempt its own bytes: an attempt that loses a race for the id removes only its own
            blob_key=None if file_id is None else f"files/{file_id}-{uuid.uuid4().hex[:8]}",
            expires_after=expires_after,
            along=along,
        )

    async def store_once(
        self,
        project_id: str,
        *,
        purpose: str,
        filename: str,
        chunks: AsyncIterable[bytes],
        file_id: str,
        expires_after: int | None = None,
    ) -> FileObject:
        """Stores a file the server makes (a batch's output) under an id fixed by the job: when an earlier attempt
        already committed it, that file is the answer, so a job repeated after a crash never makes a second copy."""
        async with self._db.session() as session:
            existing = await file_rows.get_file_by_id(session, file_id, deleted_too=True)
        if existing is not None:
            return to_wire(existing)
        # Each attempt writes its own blob, so an attempt that loses a race to commit removes only its own bytes.
        blob_key = f"files/{file_id}-{uuid.uuid4().hex[:8]}"
        try:
            return await self.store_stream(
                project_id,
                purpose=purpose,
                filename=filename,
                chunks=chunks,
                file_id=file_id,
                blob_key=blob_key,
                expires_after=expires_after,
            )
        except Conflict:
            async with self._db.session() as session:
                existing = await file_rows.get_file_by_id(session, file_id, deleted_too=True)
            if existing is None:
                raise
            return to_wire(existing)

    async def store_stream(
        self,
        project_id: str,
        *,
        purpose: str,
        filename: str,
        chunks: AsyncIterable[bytes],
        file_id: str,
        blob_key: str | None = None,
        expires_after: int | None = None,
        along: AlongWithFile | None = None,
    ) -> FileObject:
        blob_key = blob_key or f"files/{file_id}"
        size = await self._blobs.put(blob_key, chunks)
        stamp = now()
        row = StoredFile(
            id=file_id,
            project_id=project_id,
            filename=filename,
            purpose=purpose,
            bytes=size,
            created_at=stamp,
            status="processed",
            blob_key=blob_key,
            expires_at=None if expires_after is None else stamp + expires_after,
        )
        try:
            async with self._db.session() as session:
                await file_rows.add_file(session, row)
                if along is not None and not await along(session):
                    await session.rollback()
                    raise NotStored(file_id)
                await session.commit()
        except Exception:
            # No row points at the bytes: don't leave them behind. Unless the commit went through after all (its
            # answer lost): then the row needs them. Whatever cannot be told here is the blob sweeper's.
            if await self._unreferenced(file_id, blob_key):
                await self._blobs.delete(blob_key)
            raise
        return to_wire(row)

    async def _unreferenced(self, file_id: str, blob_key: str) -> bool:
        try:
            async with self._db.session() as session:
                row = await file_rows.get_file_by_id(session, file_id, deleted_too=True)
        except Exception:
            return False
        return row is None or row.blob_key != blob_key

    async def list(self, project_id: str, page: PageRequest, purpose: str | None) -> Page[FileObject]:
        async with self._db.session() as session:
            rows = await file_rows.list_files(session, project_id, page, purpose)
        return Page(items=[to_wire(row) for row in rows.items], has_more=rows.has_more)

    async def retrieve(self, project_id: str, file_id: str) -> FileObject:
        return to_wire(await self._row(project_id, file_id))

    async def delete(self, project_id: str, file_id: str) -> str:
        async with self._db.session() as session:
            row = await file_rows.get_file(session, project_id, file_id)
            if row is None:
                raise _file_not_found(file_id)
            keep_bytes = await _tombstone(session, row)
            await session.commit()
        # After the commit: a crash here leaves an unreferenced blob (the sweeper's), never a row without bytes.
        if not keep_bytes:
            await self._blobs.delete(row.blob_key)
        return file_id

    async def delete_expired(self, limit: int = 100) -> int:
        """Deletes up to `limit` files past their `expires_at` as a delete would; returns how many."""
        async with self._db.session() as session:
            rows = await file_rows.expired_files(session, limit)
            kept = [await _tombstone(session, row) for row in rows]
            await session.commit()
        for row, keep_bytes in zip(rows, kept, strict=True):
            if not keep_bytes:
                await self._blobs.delete(row.blob_key)
        return len(rows)

    async def content(self, project_id: str, file_id: str) -> FileContent:
        row = await self._row(project_id, file_id)
        try:
            size = await self._blobs.size(row.blob_key)
        except BlobNotFound:
            raise OasisError(
                500, f"The content of {file_id} is missing from the blob store.", type="server_error"
            ) from None
        return FileContent(
            filename=row.filename,
            content_type=_content_type(row.filename),
            size=size,
            chunks=self._blobs.read(row.blob_key),
        )

    async def _row(self, project_id: str, file_id: str) -> StoredFile:
        async with self._db.session() as session:
            row = await file_rows.get_file(session, project_id, file_id)
        if row is None:
            raise _file_not_found(file_id)
        return row


async def _tombstone(session: Session, row: StoredFile) -> bool:
    """Marks the file deleted; True when its bytes must stay (a job still reads them)."""
    await file_rows.mark_deleted(session, row)
    # As OpenAI does: a deleted file leaves every vector store, so search no longer returns its text.
    await vector_store_rows.detach_everywhere(session, row.project_id, row.id, now())
    # An unfinished batch or fine-tuning job still reads its input: the bytes stay until the blob sweeper finds them
    # unused.
    return await batch_rows.input_in_use(session, row.id) or bool(
        await fine_tuning_rows.files_in_training(session, [row.id])
    )


async def read_chunks(source: BinaryIO) -> AsyncIterator[bytes]:
    """A file's bytes from where it stands, a megabyte at a time, read off the event loop."""
    while chunk := await anyio.to_thread.run_sync(source.read, _CHUNK):
        yield chunk


def _content_type(filename: str) -> str:
    suffix = "." + filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    # By the extension alone: guess_type reads a name like "data:text/x,y" as a data URL and returns its type.
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type("file" + suffix)[0] or "application/octet-stream"
