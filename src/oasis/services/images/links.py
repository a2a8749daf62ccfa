"""Generated images kept for an hour behind signed links, as OpenAI's `url` answers are.

An image is a blob under `images/<project>/`; its link is `<base>/v1/images/files/<project>/<name>` with the
expiry time and an HMAC of both, so a browser opens it without an API key, nobody can reach another image by
editing the path, and nothing can be opened after the hour. The worker's sweeper removes the blobs once expired.

The signing key is `images.url_secret` when set; otherwise one is made on first use and kept in the blob store,
where every replica of the scaled-out shape finds the same key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator

from oasis.blobs import BlobStore
from oasis.blobs.base import BlobNotFound, check_key
from oasis.errors import OasisError, not_found

PREFIX = "images/"
LIFETIME_SECONDS = 3600
_SECRET_KEY = "secrets/image-links.key"


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _file_format(image: bytes) -> str:
    """The image file's format by its first bytes (an upstream may answer PNG whatever was asked for)."""
    if image.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "webp"
    return "png"


class ImageLinks:
    def __init__(self, blobs: BlobStore, secret: str | None, public_url: str | None) -> None:
        self._blobs = blobs
        self._secret = secret.encode() if secret else None
        self._configured = secret is not None
        self._public_url = public_url.rstrip("/") if public_url else None
        self._loading = asyncio.Lock()

    async def _key(self) -> bytes:
        if self._secret is None:
            async with self._loading:
                if self._secret is None:
                    self._secret = await self._stored_secret()
        return self._secret

    async def _stored_secret(self) -> bytes:
        try:
            return b"".join([chunk async for chunk in self._blobs.read(_SECRET_KEY)])
        except BlobNotFound:
            await self._blobs.put(_SECRET_KEY, _chunks(secrets.token_hex(32).encode()))
            # read back: of two replicas making one at once, both then sign with the one the store kept
            return b"".join([chunk async for chunk in self._blobs.read(_SECRET_KEY)])

    def _signature(self, key: bytes, path: str, expires: int) -> str:
        return hmac.new(key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    async def keep(self, project_id: str, image: bytes, base_url: str) -> str:
        """Stores the image (a PNG, JPEG or WebP file) and returns the link to it, named for what the bytes are."""
        path = check_key(f"{project_id}/img-{secrets.token_hex(16)}.{_file_format(image)}")
        await self._blobs.put(PREFIX + path, _chunks(image))
        expires = int(time.time()) + LIFETIME_SECONDS
        signature = self._signature(await self._key(), path, expires)
        base = self._public_url or base_url.rstrip("/")
        return f"{base}/v1/images/files/{path}?expires={expires}&signature={signature}"

    async def _signed(self, path: str, expires: int, signature: str) -> bool:
        if hmac.compare_digest(self._signature(await self._key(), path, expires), signature):
            return True
        if self._configured:
            return False
        # two replicas that made a key at the same first start: the store kept the other's; sign with that from now
        self._secret = await self._stored_secret()
        return hmac.compare_digest(self._signature(self._secret, path, expires), signature)

    async def open(self, path: str, expires: int, signature: str) -> tuple[AsyncIterator[bytes], int]:
        """The image's bytes and the seconds its link has left; 403 for a link that was altered or has expired."""
        try:
            check_key(path)
        except ValueError:
            raise not_found("No such image.") from None
        if not await self._signed(path, expires, signature):
            raise OasisError(
                403, "This image link is not valid.", type="invalid_request_error", code="invalid_signature"
            )
        left = expires - int(time.time())
        if left <= 0:
            raise OasisError(403, "This image link has expired.", type="invalid_request_error", code="link_expired")
        try:
            await self._blobs.size(PREFIX + path)
        except BlobNotFound:
            raise not_found("The image is no longer stored.") from None
        return self._blobs.read(PREFIX + path), left

    async def sweep(self, now: float | None = None) -> int:
        """Removes images whose links have all expired; returns how many."""
        cutoff = (time.time() if now is None else now) - LIFETIME_SECONDS - 60
        expired = [key async for key, modified in self._blobs.keys(PREFIX) if modified < cutoff]
        for key in expired:
            await self._blobs.delete(key)
        return len(expired)
