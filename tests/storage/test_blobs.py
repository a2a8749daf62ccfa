"""The local blob store: atomic writes, streamed reads, safe keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oasis.blobs import BlobNotFound, LocalBlobStore


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_put_then_read_back_in_chunks(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = bytes(range(256)) * 4096
    assert await store.put("files/a", _chunks(data[:1000], data[1000:])) == len(data)
    assert await store.size("files/a") == len(data)
    chunks = [chunk async for chunk in store.read("files/a", chunk_size=65536)]
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) == 65536  # streamed, not read whole


async def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    await store.put("files/a", _chunks(b"old"))

    async def failing() -> AsyncIterator[bytes]:
        yield b"new partial"
        raise OSError("disk went away")

    with pytest.raises(OSError):
        await store.put("files/a", failing())
    assert b"".join([c async for c in store.read("files/a")]) == b"old"
    assert list((tmp_path / ".tmp").iterdir()) == []


async def test_missing_blobs_and_deletes(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    with pytest.raises(BlobNotFound):
        await store.size("files/none")
    with pytest.raises(BlobNotFound):
        [c async for c in store.read("files/none")]
    await store.delete("files/none")  # deleting twice is fine: deletes get retried


@pytest.mark.parametrize("key", ["../escape", "/abs", "files/../../x", ""])
async def test_keys_cannot_escape_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError):
        await LocalBlobStore(tmp_path).put(key, _chunks(b"x"))
