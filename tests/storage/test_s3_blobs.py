"""The S3 blob store against a real S3 server (SeaweedFS on loopback): streamed multipart writes that appear
whole or not at all, streamed reads, listing, deletes, aborting killed uploads, a clear start-up error for
wrong settings, and a whole oasis serving files from the bucket."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from oasis.blobs import BlobNotFound
from oasis.blobs.s3 import UPLOAD_MARGIN_SECONDS, S3BlobStore
from oasis.settings import BlobSettings, ConfigError
from tests.conftest import Harness
from tests.s3_server import S3Server, s3_server
from tests.server_process import oasis_env, run_oasis

MIB = 1 << 20


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
async def store(s3: S3Server, request: pytest.FixtureRequest) -> AsyncIterator[S3BlobStore]:
    # Each test writes under a prefix of its own, so that listing and sweeping see only its objects.
    settings = BlobSettings.model_validate(s3.blob_settings(prefix=f"t/{request.node.name}", part_mb=5))
    blobs = S3BlobStore(settings)
    yield blobs
    await blobs.close()


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _uploads_in_progress(store: S3BlobStore) -> list[dict[str, Any]]:
    s3 = await store._s3()
    answer = await s3.list_multipart_uploads(Bucket=store._bucket, Prefix=store._prefix)
    return list(answer.get("Uploads", []))


async def test_a_large_write_goes_up_in_parts_and_reads_back_streamed(store: S3BlobStore) -> None:
    data = bytes(range(256)) * (12 * MIB // 256 + 7)  # 12 MiB and a bit: three parts of 5 MiB at most
    assert await store.put("files/big", _chunks(data, 256 * 1024)) == len(data)
    assert await store.size("files/big") == len(data)
    chunks = [chunk async for chunk in store.read("files/big", chunk_size=MIB)]
    assert b"".join(chunks) == data
    assert max(len(chunk) for chunk in chunks) <= MIB  # streamed, not read whole
    assert await store.put("files/small", _chunks(b"tiny", 4)) == 4
    assert b"".join([c async for c in store.read("files/small")]) == b"tiny"
    listed = {key: modified async for key, modified in store.keys("files/")}
    assert set(listed) == {"files/big", "files/small"}
    assert all(abs(modified - time.time()) < 300 for modified in listed.values())


async def test_a_failed_write_leaves_no_object_and_no_upload(store: S3BlobStore) -> None:
    await store.put("files/a", _chunks(b"old", 3))

    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * (6 * MIB)  # one part is already up when the source fails
        raise OSError("the client went away")

    with pytest.raises(OSError):
        await store.put("files/a", failing())
    assert b"".join([c async for c in store.read("files/a")]) == b"old"
    assert await _uploads_in_progress(store) == []


async def test_missing_objects_deletes_and_unsafe_keys(store: S3BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.size("files/none")
    with pytest.raises(BlobNotFound):
        [c async for c in store.read("files/none")]
    await store.delete("files/none")  # deleting what is gone is fine: deletes get retried
    await store.put("files/doomed", _chunks(b"bye", 3))
    await store.delete("files/doomed")
    with pytest.raises(BlobNotFound):
        await store.size("files/doomed")
    for key in ("../escape", "/abs", "files/../../x", ""):
        with pytest.raises(ValueError):
            await store.put(key, _chunks(b"x", 1))


async def test_uploads_a_crash_left_unfinished_are_aborted_once_old(store: S3BlobStore) -> None:
    s3 = await store._s3()
    await s3.create_multipart_upload(Bucket=store._bucket, Key=store._prefix + "files/killed")
    # S3 dates an upload by its start, so one still sending parts an hour on is not taken for abandoned.
    assert await store.clear_temporary(older_than=time.time() + 60) == 0
    assert len(await _uploads_in_progress(store)) == 1
    assert await store.clear_temporary(older_than=time.time() + UPLOAD_MARGIN_SECONDS + 60) == 1
    assert await _uploads_in_progress(store) == []
    # Something else in the bucket's folder (a folder marker, a name oasis never writes) is not ours to sweep.
    await s3.put_object(Bucket=store._bucket, Key=store._prefix + "files/", Body=b"")
    await s3.put_object(Bucket=store._bucket, Key=store._prefix + "files/Not ours!", Body=b"x")
    assert [key async for key, _ in store.keys("files/")] == []


async def test_wrong_keys_or_bucket_are_a_clear_error_before_serving(s3: S3Server) -> None:
    refused = S3BlobStore(BlobSettings.model_validate(s3.blob_settings(secret_access_key="not-the-secret")))
    with pytest.raises(ConfigError, match="credentials were refused"):
        await refused.check()
    await refused.close()
    missing = S3BlobStore(BlobSettings.model_validate(s3.blob_settings(bucket="no-such-bucket")))
    with pytest.raises(ConfigError, match="does not exist"):
        await missing.check()
    await missing.close()
    with pytest.raises(ValueError, match=r"blobs\.bucket"):
        BlobSettings.model_validate({"kind": "s3"})


def test_oasis_refuses_to_start_on_refused_keys(s3: S3Server, tmp_path: Path) -> None:
    config = tmp_path / "oasis.yaml"
    blobs = s3.blob_settings(secret_access_key="not-the-secret")
    lines = "\n".join(
        f"  {key}: {value if not isinstance(value, bool) else str(value).lower()}" for key, value in blobs.items()
    )
    config.write_text(f"defaults: false\nblobs:\n{lines}\n")
    done = run_oasis("worker", "--config", str(config), "--data-dir", str(tmp_path / "data"), env=oasis_env(None))
    assert done.returncode == 2, done.stderr
    assert "credentials were refused" in done.stderr and "Traceback" not in done.stderr


async def test_files_and_the_sweeper_work_on_the_bucket(
    s3: S3Server, start_oasis: Callable[..., Any], request: pytest.FixtureRequest
) -> None:
    harness: Harness = await start_oasis(
        blobs=s3.blob_settings(prefix=f"t/{request.node.name}"), workers={"in_process": False}
    )
    client = harness.sdk()
    body = b"spare key under the blue flowerpot\n" * 1000
    kept = await client.files.create(file=("kept.txt", io.BytesIO(body)), purpose="assistants")
    assert (await client.files.content(kept.id)).content == body
    gone = await client.files.create(file=("gone.txt", io.BytesIO(b"bye")), purpose="assistants")
    await client.files.delete(gone.id)
    with pytest.raises(openai.NotFoundError):
        await client.files.content(gone.id)

    blobs = harness.container.blobs
    assert isinstance(blobs, S3BlobStore)
    # What crashes leave: bytes no row points to, and an upload never completed.
    await blobs.put("files/file-orphan", _chunks(b"orphan", 6))
    s3_client = await blobs._s3()
    await s3_client.create_multipart_upload(Bucket=blobs._bucket, Key=blobs._prefix + "files/file-killed")
    # everything counts as old, killed uploads too
    removed = await harness.container.sweeper.sweep(grace_seconds=-(UPLOAD_MARGIN_SECONDS + 60))
    assert removed == (1, 1)
    assert [key async for key, _ in blobs.keys("files/")] == [f"files/{kept.id}"]
    assert (await client.files.content(kept.id)).content == body
