"""The Containers API (`client.containers`): a container is where the code_interpreter tool of responses runs
code, a sandboxed Python session while it lives, and the files in its /mnt/data (given by the client, or written by
its code), kept in the blob store so that a session started again (after it was idle, or on another replica) finds
them. It expires when unused for its `expires_after.minutes` (20 unless set), its files with it."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any

from oasis.blobs import BlobStore
from oasis.errors import OasisError, invalid_request, not_found
from oasis.services.files.service import FileService
from oasis.storage import containers as rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database
from oasis.storage.pagination import Page, PageRequest
from oasis.storage.tables import CodeContainer, ContainerFile

WORK_FOLDER = "/mnt/data"
DEFAULT_EXPIRES_MINUTES = 20
MAX_EXPIRES_MINUTES = 7 * 24 * 60
# A container's `memory_limit`: the address space its session's processes may each take, in MB.
MEMORY_LIMITS = {"1g": 1 << 10, "4g": 4 << 10, "16g": 16 << 10, "64g": 64 << 10}
MAX_NAME_CHARS = 255
# A file the code writes at a longer path stays in the session only (the column, and an index's entry, hold this).
MAX_PATH_BYTES = 1024
_READ_SIZE = 1 << 20


@dataclass(frozen=True)
class PlacedFile:
    """A file as a code run places it in /mnt/data: `tag` tells whether the session has it already; `load` gives
    its size and its bytes' chunks, read only when it is placed."""

    tag: str
    load: Callable[[], Awaitable[tuple[int, AsyncIterator[bytes]]]]


def _status(row: CodeContainer) -> str:
    return "expired" if _expired(row) else "running"


def _expired(row: CodeContainer) -> bool:
    return now() > row.last_active_at + row.expires_minutes * 60


def container_to_wire(row: CodeContainer) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "container",
        "created_at": row.created_at,
        "status": _status(row),
        "expires_after": {"anchor": "last_active_at", "minutes": row.expires_minutes},
        "last_active_at": row.last_active_at,
        "memory_limit": row.memory_limit or "1g",
        "name": row.name,
    }


def file_to_wire(row: ContainerFile) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "container.file",
        "bytes": row.bytes,
        "container_id": row.container_id,
        "created_at": row.created_at,
        "path": row.path,
        "source": row.source,
    }


def _expires_minutes(expires_after: Any) -> int:
    if expires_after is None:
        return DEFAULT_EXPIRES_MINUTES
    if not isinstance(expires_after, dict) or expires_after.get("anchor") != "last_active_at":
        raise invalid_request(
            '`expires_after` is `{"anchor": "last_active_at", "minutes": N}`.', param="expires_after.anchor"
        )
    minutes = expires_after.get("minutes")
    if not isinstance(minutes, int) or isinstance(minutes, bool) or not 1 <= minutes <= MAX_EXPIRES_MINUTES:
        raise invalid_request(
            f"`expires_after.minutes` is a whole number from 1 to {MAX_EXPIRES_MINUTES}.", param="expires_after.minutes"
        )
    return minutes


def _file_name(filename: str, param: str) -> str:
    """The name a file gets in /mnt/data: its own, without folders."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name in (".", "..") or len(name) > MAX_NAME_CHARS or any(ord(char) < 32 for char in name):
        raise invalid_request(
            f"A container file needs a name of 1 to {MAX_NAME_CHARS} characters, without control characters.",
            param=param,
        )
    return name


class _TooLarge(Exception):
    pass


async def _chunks_of(source: IO[bytes], most: int) -> AsyncIterator[bytes]:
    """The upload's chunks, stopped (`_TooLarge`) past `most` bytes rather than stored whole first."""
    read = 0
    while chunk := source.read(_READ_SIZE):
        read += len(chunk)
        if read > most:
            raise _TooLarge
        yield chunk


async def _one_chunk(data: bytes) -> AsyncIterator[bytes]:
    yield data


class ContainerService:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        files: FileService,
        max_file_bytes: int,
        end_session: Callable[[str, str], Awaitable[None]],
        max_memory_mb: int | None = None,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._files = files
        self._max_file_bytes = max_file_bytes
        self._max_memory_mb = max_memory_mb  # the most a `memory_limit` may ask for (the operator's bound)
        self._end_session = end_session  # (project id, container id): its sandbox session ends

    # --- containers ---------------------------------------------------------------------------------------------

    async def create(
        self,
        project_id: str,
        name: Any,
        file_ids: Any = None,
        expires_after: Any = None,
        memory_limit: Any = None,
        container_id: str | None = None,
    ) -> dict[str, Any]:
        """A new container with copies of the project's files `file_ids` in its /mnt/data (`container_id`: the id
        a response's `auto` container was given)."""
        if not isinstance(name, str) or not name.strip() or len(name) > 256:
            raise invalid_request("A container needs a `name` (up to 256 characters).", param="name")
        self.check_memory_limit(memory_limit, "memory_limit")
        minutes = _expires_minutes(expires_after)
        if file_ids is not None and (
            not isinstance(file_ids, list) or not all(isinstance(file_id, str) for file_id in file_ids)
        ):
            raise invalid_request("`file_ids` is a list of file ids.", param="file_ids")
        for file_id in dict.fromkeys(file_ids or []):
            await self._check_file(project_id, file_id, "file_ids")
        stamp = now()
        row = CodeContainer(
            id=container_id or new_id("cntr_"),
            project_id=project_id,
            name=name,
            created_at=stamp,
            last_active_at=stamp,
            expires_minutes=minutes,
            memory_limit=memory_limit,
        )
        copies: list[ContainerFile] = []
        names: set[str] = set()
        for file_id in dict.fromkeys(file_ids or []):  # one at a time: a file's bytes are never all in memory
            copy = await self._copy_of(project_id, row.id, file_id, "file_ids")
            if copy.path in names:  # two files of one name: the later one keeps its id in its name
                copy.path = f"{WORK_FOLDER}/{file_id}-{copy.path.removeprefix(WORK_FOLDER + '/')}"
            names.add(copy.path)
            copies.append(copy)
        async with self._db.session() as session:
            session.add(row)
            session.add_all(copies)
            await session.commit()
        return container_to_wire(row)

    def check_memory_limit(self, memory_limit: Any, param: str) -> None:
        """A 400 for a `memory_limit` that is not one of OpenAI's sizes, or more than this server gives."""
        if memory_limit is None:
            return
        if not isinstance(memory_limit, str) or memory_limit not in MEMORY_LIMITS:
            raise invalid_request(f"`memory_limit` is one of {', '.join(MEMORY_LIMITS)}.", param=param)
        if self._max_memory_mb is not None and MEMORY_LIMITS[memory_limit] > self._max_memory_mb:
            raise invalid_request(
                f"`memory_limit` {memory_limit} is more than this server gives a container ({self._max_memory_mb} "
                "MB, its `code_interpreter.max_memory_mb`).",
                param=param,
            )

    async def memory_mb(self, project_id: str, container_id: str) -> int | None:
        """The address space the container's `memory_limit` gives its session's processes (None: the default)."""
        async with self._db.session() as session:
            row = await rows.get_container(session, project_id, container_id)
        asked = MEMORY_LIMITS.get(row.memory_limit or "") if row is not None else None
        if asked is None:
            return None
        # a container made while the operator allowed more gets no more than is allowed now
        return asked if self._max_memory_mb is None else min(asked, self._max_memory_mb)

    async def check_files(self, project_id: str, file_ids: list[str], param: str) -> None:
        """A 404 for a file the project does not have, a 400 for one too large for a container."""
        for file_id in file_ids:
            await self._check_file(project_id, file_id, param)

    async def _check_file(self, project_id: str, file_id: str, param: str) -> int:
        try:
            size = (await self._files.retrieve(project_id, file_id)).bytes
        except OasisError as exc:
            if exc.status == 404:
                raise not_found(f"No file found with id '{file_id}'.", param=param) from None
            raise
        if size > self._max_file_bytes:
            raise invalid_request(
                f"File {file_id} ({size} bytes) is larger than a container file may be ({self._max_file_bytes} bytes).",
                param=param,
            )
        return size

    async def _copy_of(self, project_id: str, container_id: str, file_id: str, param: str) -> ContainerFile:
        """A row for a copy of the project's file (checked by `_check_file` first), its bytes stored."""
        content = await self._files.content(project_id, file_id)
        key = self._blob_key(container_id)
        size = await self._blobs.put(key, content.chunks)
        path = f"{WORK_FOLDER}/{_file_name(content.filename, param)}"
        return self._file_row(container_id, path, size, "user", key)

    async def list_containers(
        self, project_id: str, page: PageRequest, name: str | None = None
    ) -> Page[dict[str, Any]]:
        async with self._db.session() as session:
            found = await rows.list_containers(session, project_id, page, name)
        return Page([container_to_wire(row) for row in found.items], has_more=found.has_more)

    async def retrieve(self, project_id: str, container_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            return container_to_wire(await self._container(session, project_id, container_id))

    async def delete(self, project_id: str, container_id: str) -> dict[str, Any]:
        """Deletes the container and its files (their bytes go with the next blob sweep); its session ends."""
        stamp = now()
        async with self._db.session() as session:
            row = await self._container(session, project_id, container_id)
            row.deleted_at = stamp
            await rows.delete_all_files(session, container_id, stamp)
            await session.commit()
        await self._end_session(project_id, container_id)
        return {"id": container_id, "object": "container.deleted", "deleted": True}

    # --- its files ------------------------------------------------------------------------------------------------

    async def upload_file(self, project_id: str, container_id: str, filename: str, source: IO[bytes]) -> dict[str, Any]:
        async with self._db.session() as session:
            await self._usable(session, project_id, container_id, param="container_id")
        path = f"{WORK_FOLDER}/{_file_name(filename, 'file')}"
        key = self._blob_key(container_id)
        try:
            size = await self._blobs.put(key, _chunks_of(source, self._max_file_bytes))
        except _TooLarge:
            await self._blobs.delete(key)
            raise invalid_request(
                f"The file is larger than a container file may be ({self._max_file_bytes} bytes).", param="file"
            ) from None
        row = self._file_row(container_id, path, size, "user", key)
        return file_to_wire(await self._add(project_id, container_id, row))

    async def add_project_file(self, project_id: str, container_id: str, file_id: Any) -> dict[str, Any]:
        if not isinstance(file_id, str) or not file_id:
            raise invalid_request("Send the file as multipart `file`, or give `file_id`.", param="file_id")
        async with self._db.session() as session:
            await self._usable(session, project_id, container_id, param="container_id")
        await self._check_file(project_id, file_id, "file_id")
        row = await self._copy_of(project_id, container_id, file_id, "file_id")
        return file_to_wire(await self._add(project_id, container_id, row))

    async def _add(self, project_id: str, container_id: str, row: ContainerFile) -> ContainerFile:
        """Adds the file, in place of one at its path."""
        async with self._db.session() as session:
            await self._usable(session, project_id, container_id, param="container_id")
            await rows.delete_files_at(session, container_id, [row.path], row.created_at)
            session.add(row)
            await rows.touch(session, container_id, now())
            await session.commit()
        return row

    async def list_files(self, project_id: str, container_id: str, page: PageRequest) -> Page[dict[str, Any]]:
        async with self._db.session() as session:
            await self._usable(session, project_id, container_id, param="container_id")
            found = await rows.list_files(session, container_id, page)
        return Page([file_to_wire(row) for row in found.items], has_more=found.has_more)

    async def retrieve_file(self, project_id: str, container_id: str, file_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            return file_to_wire(await self._file(session, project_id, container_id, file_id))

    async def file_content(self, project_id: str, container_id: str, file_id: str) -> tuple[ContainerFile, Any]:
        """The file's row and its bytes' chunks."""
        async with self._db.session() as session:
            row = await self._file(session, project_id, container_id, file_id)
        return row, self._blobs.read(row.blob_key)

    async def delete_file(self, project_id: str, container_id: str, file_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            row = await self._file(session, project_id, container_id, file_id)
            row.deleted_at = now()
            await session.commit()
        return {"id": file_id, "object": "container.file.deleted", "deleted": True}

    # --- code runs ------------------------------------------------------------------------------------------------

    async def check_usable(self, project_id: str, container_id: str, param: str) -> None:
        """A 404 for a container the project does not have, a 400 for an expired one."""
        async with self._db.session() as session:
            await self._usable(session, project_id, container_id, param=param)

    async def ensure(
        self, project_id: str, container_id: str, file_ids: list[str], memory_limit: str | None = None
    ) -> None:
        """A response's `auto` container, made (with its files) on its first run; one deleted since is not made
        again (the run then finds it gone)."""
        async with self._db.session() as session:
            made = await rows.ever_made(session, container_id)
        if not made:
            await self.create(project_id, "auto", file_ids, memory_limit=memory_limit, container_id=container_id)

    async def placed_files(self, project_id: str, container_id: str) -> dict[str, PlacedFile]:
        """The container's files by their name in /mnt/data, for a run to place those its session lacks; the run
        counts as activity."""
        async with self._db.session() as session:
            await self._usable(session, project_id, container_id, param="tools")
            found = await rows.live_files(session, container_id)
            await rows.touch(session, container_id, now())
            await session.commit()
        placed: dict[str, PlacedFile] = {}
        for row in found:
            name = row.path.removeprefix(f"{WORK_FOLDER}/")

            async def load(key: str = row.blob_key, size: int = row.bytes) -> tuple[int, AsyncIterator[bytes]]:
                return size, self._blobs.read(key)

            placed[name] = PlacedFile(row.id, load)
        return placed

    async def record_written(
        self, project_id: str, container_id: str, written: dict[str, bytes]
    ) -> dict[str, dict[str, Any]]:
        """Files a run's code wrote (path under /mnt/data -> content) as the container's (`source: assistant`),
        each in place of the one at its path; returns them by their full path. The run counts as activity (a run
        longer than the container's minutes keeps what it wrote)."""
        kept = {path: data for path, data in written.items() if len(f"{WORK_FOLDER}/{path}".encode()) <= MAX_PATH_BYTES}
        stored = await self._stored_files(container_id, [(path, data, "assistant") for path, data in kept.items()])
        if not stored:
            return {}
        async with self._db.session() as session:
            await self._container(session, project_id, container_id, "tools")  # deleted meanwhile: a 404
            await rows.delete_files_at(session, container_id, [row.path for row in stored], stored[0].created_at)
            session.add_all(stored)
            await rows.touch(session, container_id, now())
            await session.commit()
        return {row.path: file_to_wire(row) for row in stored}

    # --- helpers --------------------------------------------------------------------------------------------------

    async def _stored_files(self, container_id: str, files: list[tuple[str, bytes, str]]) -> list[ContainerFile]:
        """Rows of files whose bytes are stored (name or path under /mnt/data, content, source)."""
        made = []
        for name, data, source in files:
            key = self._blob_key(container_id)
            await self._blobs.put(key, _one_chunk(data))
            made.append(self._file_row(container_id, f"{WORK_FOLDER}/{name}", len(data), source, key))
        return made

    @staticmethod
    def _file_row(container_id: str, path: str, size: int, source: str, key: str) -> ContainerFile:
        return ContainerFile(
            id=new_id("cfile_"),
            container_id=container_id,
            path=path,
            bytes=size,
            created_at=now(),
            source=source,
            blob_key=key,
        )

    @staticmethod
    def _blob_key(container_id: str) -> str:
        digest = hashlib.sha256(f"{container_id}:{time.time_ns()}:{uuid.uuid4().hex}".encode()).hexdigest()[:16]
        return f"containers/{container_id}/{digest}"

    @staticmethod
    async def _container(
        session: Any, project_id: str, container_id: str, param: str = "container_id"
    ) -> CodeContainer:
        row = await rows.get_container(session, project_id, container_id)
        if row is None:
            raise not_found(f"No container found with id '{container_id}'.", param=param)
        return row

    async def _usable(self, session: Any, project_id: str, container_id: str, param: str) -> CodeContainer:
        row = await self._container(session, project_id, container_id, param)
        if _expired(row):
            raise OasisError(
                400,
                f"Container '{container_id}' has expired: its files and session are gone.",
                type="invalid_request_error",
                param=param,
                code="container_expired",
            )
        return row

    async def _file(self, session: Any, project_id: str, container_id: str, file_id: str) -> ContainerFile:
        await self._usable(session, project_id, container_id, param="container_id")
        row = await rows.get_file(session, container_id, file_id)
        if row is None:
            raise not_found(f"No file found with id '{file_id}' in container '{container_id}'.", param="file_id")
        return row
