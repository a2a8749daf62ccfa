"""The BlobStore protocol: a local folder now, an S3 bucket in the scaled-out shape."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol


class BlobNotFound(KeyError):
    """No blob is stored under the key."""


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
