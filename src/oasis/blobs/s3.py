"""Blobs as objects in an S3 bucket, shared by every replica and worker of the scaled-out shape.

A write streams: parts of `part_mb` go up as a multipart upload, so at most one part of a file is in memory,
and the object only appears when the upload completes (all or nothing, like the local store's rename). A write
that dies leaves an unfinished multipart upload, which `clear_temporary` aborts once it is old.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

from oasis.blobs.base import BLOB_FOLDERS, BlobNotFound, check_key
from oasis.settings import MIB, BlobSettings, ConfigError

_MISSING = ("NoSuchKey", "404", "NotFound")
MAX_CONNECTIONS = 64
UPLOAD_MARGIN_SECONDS = 23 * 3600  # on top of the sweeper's hour: uploads a day old are abandoned


def _code(error: Any) -> str | None:
    code: str | None = error.response.get("Error", {}).get("Code")
    return code


@contextlib.contextmanager
def _missing_is_not_found(key: str) -> Iterator[None]:
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        if _code(exc) in _MISSING:
            raise BlobNotFound(key) from exc
        raise


class S3BlobStore:
    def __init__(self, settings: BlobSettings) -> None:
        from botocore.config import Config

        assert settings.bucket is not None  # BlobSettings checks it for kind s3
        self._bucket = settings.bucket
        self._prefix = settings.prefix.strip("/") + "/" if settings.prefix.strip("/") else ""
        self._part_bytes = settings.part_mb * MIB
        self._endpoint = settings.endpoint_url or "AWS"
        self._client_options: dict[str, Any] = {
            "region_name": settings.region,
            "endpoint_url": settings.endpoint_url,
            "config": Config(
                s3={"addressing_style": "path" if settings.path_style else "auto"},
                retries={"max_attempts": 4, "mode": "standard"},
                # Each download being streamed to a client holds a connection for as long as the client reads.
                max_pool_connections=MAX_CONNECTIONS,
                # Checksums only where S3 requires them: several S3-compatible servers refuse botocore's default
                # CRC32 trailers.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        }
        if settings.access_key_id is not None and settings.secret_access_key is not None:
            self._client_options["aws_access_key_id"] = settings.access_key_id.get_secret_value()
            self._client_options["aws_secret_access_key"] = settings.secret_access_key.get_secret_value()
        self._client: Any = None
        self._opening = asyncio.Lock()
        self._stack = AsyncExitStack()

    async def _s3(self) -> Any:
        # Opened on first use, in the event loop that uses it (aiohttp sessions belong to one loop).
        if self._client is None:
            async with self._opening:
                if self._client is None:
                    from aiobotocore.session import get_session

                    self._client = await self._stack.enter_async_context(
                        get_session().create_client("s3", **self._client_options)
                    )
        return self._client

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    async def check(self) -> None:
        """Raises ConfigError, in one line, when the bucket cannot be reached with these settings: a wrong key
        or endpoint shows at start-up, not as a 500 on the first upload."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"S3 bucket {self._bucket!r} at {self._endpoint}"
        try:
            await (await self._s3()).head_bucket(Bucket=self._bucket)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            reason = {403: "the credentials were refused", 404: "the bucket does not exist"}.get(status, str(exc))
            raise ConfigError(f"blobs: {where}: {reason} (HTTP {status})") from None
        except (BotoCoreError, OSError) as exc:
            raise ConfigError(f"blobs: {where} cannot be reached: {exc}") from None

    async def put(self, key: str, chunks: AsyncIterable[bytes]) -> int:
        s3, name = await self._s3(), self._key(key)
        buffer = bytearray()
        written = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []

        async def send_part(body: bytes) -> None:
            number = len(parts) + 1
            answer = await s3.upload_part(
                Bucket=self._bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=body
            )
            parts.append({"ETag": answer["ETag"], "PartNumber": number})

        try:
            async for chunk in chunks:
                buffer += chunk
                written += len(chunk)
                while len(buffer) >= self._part_bytes:
                    if upload_id is None:
                        created = await s3.create_multipart_upload(Bucket=self._bucket, Key=name)
                        upload_id = created["UploadId"]
                    with memoryview(buffer) as view:
                        body = bytes(view[: self._part_bytes])  # one copy, not two
                    del buffer[: self._part_bytes]
                    await send_part(body)
            if upload_id is None:
                await s3.put_object(Bucket=self._bucket, Key=name, Body=bytes(buffer))
            else:
                if buffer:
                    await send_part(bytes(buffer))
                await s3.complete_multipart_upload(
                    Bucket=self._bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if upload_id is not None:
                # Shielded: a cancelled upload is still aborted (else clear_temporary does it later).
                with contextlib.suppress(Exception):
                    await asyncio.shield(s3.abort_multipart_upload(Bucket=self._bucket, Key=name, UploadId=upload_id))
            raise
        return written

    async def read(self, key: str, chunk_size: int = 1 << 20) -> AsyncIterator[bytes]:
        with _missing_is_not_found(key):
            answer = await (await self._s3()).get_object(Bucket=self._bucket, Key=self._key(key))
        async with answer["Body"] as body:
            while chunk := await body.read(chunk_size):
                yield chunk

    async def size(self, key: str) -> int:
        with _missing_is_not_found(key):
            head = await (await self._s3()).head_object(Bucket=self._bucket, Key=self._key(key))
        return int(head["ContentLength"])

    async def delete(self, key: str) -> None:
        await (await self._s3()).delete_object(Bucket=self._bucket, Key=self._key(key))

    async def keys(self, prefix: str) -> AsyncIterator[tuple[str, float]]:
        pages = (await self._s3()).get_paginator("list_objects_v2")
        async for page in pages.paginate(Bucket=self._bucket, Prefix=self._prefix + prefix):
            for item in page.get("Contents", []):
                key = item["Key"][len(self._prefix) :]
                try:
                    check_key(key)
                except ValueError:
                    continue  # not one of ours (a folder marker, another program's object): never swept
                yield key, item["LastModified"].timestamp()

    async def clear_temporary(self, older_than: float) -> int:
        """Aborts uploads started a day before `older_than`: S3 dates an upload by its start, not by its last
        part, so a long upload still going must not look abandoned. Only oasis's folders are looked at."""
        from botocore.exceptions import ClientError

        s3 = await self._s3()
        aborted = 0
        pages = s3.get_paginator("list_multipart_uploads")
        for folder in BLOB_FOLDERS:
            async for page in pages.paginate(Bucket=self._bucket, Prefix=self._prefix + folder):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"].timestamp() >= older_than - UPLOAD_MARGIN_SECONDS:
                        continue
                    try:
                        await s3.abort_multipart_upload(
                            Bucket=self._bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
                    except ClientError as exc:  # another sweeper aborted it first
                        if _code(exc) not in ("NoSuchUpload", "404"):
                            raise
        return aborted

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None
