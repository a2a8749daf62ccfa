"""Blobs as files in a folder: written to a temporary file, fsynced, then renamed into place."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import anyio

from oasis.blobs.base import BlobNotFound, check_key


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def check(self) -> None:
        """The folder was made when the store was; nothing more to check."""

    async def close(self) -> None:
        """Nothing is held open between calls."""

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        target = self._path(key)
        temp = self._tmp / f"{uuid.uuid4().hex}.part"
        written = 0
        handle = await anyio.open_file(temp, "wb")
        try:
            async for chunk in chunks:
                await handle.write(chunk)
                written += len(chunk)
            await handle.flush()
            await anyio.to_thread.run_sync(os.fsync, handle.wrapped.fileno())
        except BaseException:
            await handle.aclose()
            temp.unlink(missing_ok=True)
            raise
        await handle.aclose()
        await anyio.to_thread.run_sync(self._commit, temp, target)
        return written

    @staticmethod
    def _commit(temp: Path, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)
        # The rename lives in the folder's own entry: without this a power cut can lose a committed blob.
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    async def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await anyio.open_file(path, "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc
        async with handle:
            while chunk := await handle.read(chunk_size):
                yield chunk

    async def size(self, key: str) -> int:
        try:
            return (await anyio.Path(self._path(key)).stat()).st_size
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    async def delete(self, key: str) -> None:
        await anyio.Path(self._path(key)).unlink(missing_ok=True)

    async def keys(self, prefix: str) -> AsyncIterator[tuple[str, float]]:
        base = self._path(prefix.rstrip("/"))
        listed = await anyio.to_thread.run_sync(_files_under, base)
        for path, modified in listed:
            key = path.relative_to(self.root).as_posix()
            try:
                check_key(key)
            except ValueError:
                continue  # not one of ours (a .DS_Store, an .nfs file): never swept, and no key to delete it by
            yield key, modified

    async def clear_temporary(self, older_than: float) -> int:
        def clear() -> int:
            removed = 0
            for path in self._tmp.glob("*.part"):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < older_than:
                        path.unlink()
                        removed += 1
            return removed

        return await anyio.to_thread.run_sync(clear)


def _files_under(base: Path) -> list[tuple[Path, float]]:
    found = []
    for folder, _, names in os.walk(base):
        for name in names:
            path = Path(folder) / name
            with contextlib.suppress(FileNotFoundError):
                found.append((path, path.stat().st_mtime))
    return found
