"""The Uploads API (after the 2.0.0 spec; newer SDKs' `client.uploads` and their `upload_file_chunked`): a file sent
in parts of up to 64 MB, each stored as it arrives, then completed into one File, which gets every check a file
upload gets. An upload is pending for an hour; its parts' bytes go once it is completed or cancelled, and the blob
sweeper removes those of one that expired."""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from oasis.blobs import BlobNotFound, BlobStore
from oasis.errors import OasisError, invalid_request, not_found
from oasis.protocol.extensions import UPLOAD_PURPOSES, FileObject
from oasis.services.files.expiry import file_expiry
from oasis.services.files.service import FileService, NotStored, read_chunks, to_wire
from oasis.storage import files as file_rows
from oasis.storage import uploads as upload_rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Conflict, Database, Session
from oasis.storage.tables import Upload, UploadPart

MAX_UPLOAD_BYTES = 8 * 1024**3  # OpenAI's: an upload holds at most 8 GB
MAX_PART_BYTES = 64 * 1024**2  # and a part at most 64 MB
UPLOAD_SECONDS = 3600  # an upload expires an hour after it is created
_SPOOL_IN_MEMORY = 8 << 20


def upload_to_wire(row: Upload, file: FileObject | None = None) -> dict[str, Any]:
    status = "expired" if row.status == "pending" and now() >= row.expires_at else row.status
    return {
        "id": row.id,
        "object": "upload",
        "bytes": row.bytes,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "filename": row.filename,
        "purpose": row.purpose,
        "status": status,
        "file": file.model_dump(exclude_none=True) if file is not None else None,
    }


def part_to_wire(row: UploadPart) -> dict[str, Any]:
    return {"id": row.id, "object": "upload.part", "created_at": row.created_at, "upload_id": row.upload_id}


def _text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise invalid_request(f"Missing required parameter: '{name}'.", param=name)
    if not isinstance(value, str) or not value.strip():
        raise invalid_request(f"'{name}' must be a non-empty string.", param=name)
    return value


def _file_expiry(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_request("'expires_after' must be an object with `anchor` and `seconds`.", param="expires_after")
    return file_expiry(value.get("anchor"), value.get("seconds"))


def _file_id(upload: Upload) -> str:
    """The id of the file an upload becomes, fixed by the upload: of two completions at once, the second's file
    breaks the id's uniqueness, and it answers the first's."""
    return "file-" + upload.id.removeprefix("upload_")


class UploadService:
    def __init__(self, db: Database, blobs: BlobStore, files: FileService, spool_dir: Path) -> None:
        self._db = db
        self._blobs = blobs
        self._files = files
        self._spool_dir = spool_dir

    async def create(self, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
        filename = _text(body, "filename")
        purpose = _text(body, "purpose")
        if purpose not in UPLOAD_PURPOSES:
            raise invalid_request(
                f"'{purpose}' is not one of {', '.join(map(repr, UPLOAD_PURPOSES))} - 'purpose'", param="purpose"
            )
        mime_type = _text(body, "mime_type")
        size = body.get("bytes")
        if size is None:
            raise invalid_request("Missing required parameter: 'bytes'.", param="bytes")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_UPLOAD_BYTES:
            raise invalid_request(
                f"'bytes' must be a whole number from 1 to {MAX_UPLOAD_BYTES} (8 GB); got {size!r}.", param="bytes"
            )
        stamp = now()
        row = Upload(
            id=new_id("upload_"),
            project_id=project_id,
            filename=filename,
            purpose=purpose,
            bytes=size,
            mime_type=mime_type,
            status="pending",
            created_at=stamp,
            expires_at=stamp + UPLOAD_SECONDS,
            file_expires_after=_file_expiry(body.get("expires_after")),
        )
        async with self._db.session() as session:
            session.add(row)
            await session.commit()
        return upload_to_wire(row)

    async def add_part(self, project_id: str, upload_id: str, source: BinaryIO, size: int) -> dict[str, Any]:
        if size > MAX_PART_BYTES:
            raise invalid_request(
                f"A part is {size} bytes; a part may be at most {MAX_PART_BYTES} bytes (64 MB).", param="data"
            )
        async with self._db.session() as session:
            await self._pending(session, project_id, upload_id)
        part_id = new_id("part_")
        blob_key = f"uploads/{upload_id}/{part_id}"
        source.seek(0)
        stored = await self._blobs.put(blob_key, read_chunks(source))
        part = UploadPart(id=part_id, upload_id=upload_id, created_at=now(), bytes=stored, blob_key=blob_key)
        try:
            async with self._db.session() as session:
                # still pending, and held so until the part is in: a completion or cancel meanwhile comes after
                if not await upload_rows.hold_pending(session, upload_id, now()):
                    await self._pending(session, project_id, upload_id)  # says what it is now
                    raise invalid_request(f"Upload {upload_id} is no longer pending.", param="upload_id")
                session.add(part)
                await session.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                await self._blobs.delete(blob_key)
            raise
        return part_to_wire(part)

    async def complete(self, project_id: str, upload_id: str, part_ids: Any, md5: Any) -> dict[str, Any]:
        """The parts, in the order named, become the upload's file (checked as an upload of that purpose is); an
        `md5` given must be the file's. The file and the upload's end are written together; a completion asked
        again (a client's retry) of an upload completed meanwhile answers the completed upload."""
        if not isinstance(part_ids, list) or not part_ids or not all(isinstance(part, str) for part in part_ids):
            raise invalid_request("'part_ids' must be a non-empty list of the upload's part ids.", param="part_ids")
        if len(set(part_ids)) != len(part_ids):
            raise invalid_request("'part_ids' names a part more than once.", param="part_ids")
        if md5 is not None and not isinstance(md5, str):
            raise invalid_request("'md5' must be the file's MD5 checksum in hexadecimal.", param="md5")
        async with self._db.session() as session:
            done = await self._completed(session, project_id, upload_id)
            if done is not None:
                return done
            upload = await self._pending(session, project_id, upload_id)
            found = {part.id: part for part in await upload_rows.parts(session, upload_id)}
        missing = [part_id for part_id in part_ids if part_id not in found]
        if missing:
            raise invalid_request(f"No part {missing[0]} in upload {upload_id}.", param="part_ids")
        chosen = [found[part_id] for part_id in part_ids]
        total = sum(part.bytes for part in chosen)
        if total != upload.bytes:
            raise invalid_request(
                f"The parts hold {total} bytes; upload {upload_id} was created for {upload.bytes}.", param="part_ids"
            )
        file_id = _file_id(upload)

        async def mark_completed(session: Session) -> bool:
            # past its hour now is no reason to refuse: it was pending when the completion began
            return await upload_rows.end(session, upload, now(), status="completed", file_id=file_id, expired_too=True)

        digest = hashlib.md5(usedforsecurity=False)
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.SpooledTemporaryFile(
                max_size=_SPOOL_IN_MEMORY, mode="w+b", dir=str(self._spool_dir)
            ) as spool:
                for part in chosen:
                    async for piece in self._blobs.read(part.blob_key):
                        digest.update(piece)
                        await anyio.to_thread.run_sync(spool.write, piece)
                if md5 is not None and md5.lower() != digest.hexdigest():
                    raise invalid_request(
                        f"The parts' MD5 checksum is {digest.hexdigest()}, not the {md5} given.", param="md5"
                    )
                file = await self._files.upload(
                    project_id,
                    purpose=upload.purpose,
                    filename=upload.filename,
                    source=spool,  # type: ignore[arg-type]  # a binary file, as typeshed does not say
                    size=total,
                    expires_after=upload.file_expires_after,
                    file_id=file_id,
                    max_bytes=MAX_UPLOAD_BYTES,
                    along=mark_completed,
                )
        except (BlobNotFound, NotStored, Conflict) as exc:
            # another request ended the upload meanwhile (its parts gone with it, or its file stored first)
            async with self._db.session() as session:
                done = await self._completed(session, project_id, upload_id)
                if done is not None:
                    return done
                await self._pending(session, project_id, upload_id)  # says what it is now
            if isinstance(exc, BlobNotFound):
                raise OasisError(
                    500, f"The bytes of upload {upload_id}'s parts are missing.", type="server_error"
                ) from None
            raise
        upload.status, upload.file_id = "completed", file.id
        await self._drop_parts(list(found.values()))
        return upload_to_wire(upload, file)

    async def cancel(self, project_id: str, upload_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            upload = await self._pending(session, project_id, upload_id)
            if not await upload_rows.end(session, upload, now(), status="cancelled"):
                raise invalid_request(f"Upload {upload_id} ended before it could be cancelled.", param="upload_id")
            await session.commit()
            found = await upload_rows.parts(session, upload_id)
        upload.status = "cancelled"
        await self._drop_parts(found)
        return upload_to_wire(upload)

    async def _completed(self, session: Session, project_id: str, upload_id: str) -> dict[str, Any] | None:
        """The upload as its completion answered it, when it is completed."""
        upload = await upload_rows.get_upload(session, project_id, upload_id)
        if upload is None or upload.status != "completed" or upload.file_id is None:
            return None
        file = await file_rows.get_file_by_id(session, upload.file_id, deleted_too=True)
        return upload_to_wire(upload, to_wire(file) if file is not None else None)

    async def _pending(self, session: Session, project_id: str, upload_id: str) -> Upload:
        upload = await upload_rows.get_upload(session, project_id, upload_id)
        if upload is None:
            raise not_found(f"No Upload found with id '{upload_id}'.", param="upload_id")
        status = upload_to_wire(upload)["status"]
        if status != "pending":
            raise invalid_request(
                f"Upload {upload_id} is {status}; only a pending upload takes parts, completes or is cancelled.",
                param="upload_id",
            )
        return upload

    async def _drop_parts(self, parts: list[UploadPart]) -> None:
        """The parts' bytes, once the upload ended (what is left, the blob sweeper finds unreferenced)."""
        for part in parts:
            with contextlib.suppress(Exception):
                await self._blobs.delete(part.blob_key)
