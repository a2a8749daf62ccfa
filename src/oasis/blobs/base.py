"""The BlobStore protocol: a local folder, or an S3 bucket in the scaled-out shape."""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol

# The folders oasis writes blobs under (files, and fine-tuned models to come).
BLOB_FOLDERS = ("files/", "models/", "uploads/", "containers/")  # what the sweeper looks through
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


class BlobNotFound(KeyError):
    """No blob is stored under the key."""


def check_key(key: str) -> str:
    """Keys come from our own ids, but a key must never escape its folder or prefix whatever it is given."""
    if not _SAFE_KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"unsafe blob key {key!r}")
    return key


class BlobStore(Protocol):
    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        """Store the chunks under `key` atomically (all or nothing); return the byte count."""
        ...

    def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        """Stream the blob back in chunks; raises BlobNotFound when it is missing."""
        ...

    async def size(self, key: str) -> int: ...

    async def delete(self, key: str) -> None:
        """Remove the blob; a missing blob is not an error (deletes are retried after crashes)."""
        ...

    def keys(self, prefix: str) -> AsyncIterator[tuple[str, float]]:
        """Every stored key under `prefix`, with the time it was last written (seconds since the epoch)."""
        ...

    async def clear_temporary(self, older_than: float) -> int:
        """Removes writes that never finished (a killed upload) and were started before `older_than`; returns how
        many."""
        ...

    async def check(self) -> None:
        """Raises ConfigError when the store cannot be used with its settings (checked before serving)."""
        ...

    async def close(self) -> None: ...
