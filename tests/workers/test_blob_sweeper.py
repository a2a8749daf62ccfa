"""The blob sweeper removes bytes no row points to and killed uploads, and nothing a row still needs."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.api.test_batches import request, upload_batch_file
from tests.conftest import Harness

HOURS_AGO = time.time() - 2 * 3600


def _age(path: Path) -> None:
    os.utime(path, (HOURS_AGO, HOURS_AGO))


async def test_sweep_removes_only_what_nothing_points_to(start_oasis: Callable[..., Any]) -> None:
    harness: Harness = await start_oasis(workers={"in_process": False})
    client = harness.sdk()
    blobs = harness.container.settings.blobs_dir
    kept = await client.files.create(file=("kept.txt", io.BytesIO(b"still here")), purpose="assistants")
    deleted = await client.files.create(file=("gone.txt", io.BytesIO(b"deleted")), purpose="assistants")
    # A batch that has not run yet still reads its input after the user deletes the file.
    line = request("a", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})
    batch_input = await upload_batch_file(client, [line])
    await client.batches.create(input_file_id=batch_input, endpoint="/v1/embeddings", completion_window="24h")
    await client.files.delete(batch_input)
    # A crash between the tombstone and the blob's deletion leaves the bytes of a deleted file behind.
    (blobs / "files" / "tombstoned").write_bytes(b"x")
    await client.files.delete(deleted.id)
    (blobs / "files" / deleted.id).write_bytes(b"left behind by a crash")
    # A crash between writing a blob and committing its row: old, and new (its row may still be coming).
    (blobs / "files" / "file-orphan").write_bytes(b"orphan")
    (blobs / "files" / "file-in-flight").write_bytes(b"row not committed yet")
    # A killed upload: old and new temporary files.
    (blobs / ".tmp" / "dead.part").write_bytes(b"half")
    (blobs / ".tmp" / "live.part").write_bytes(b"half")
    # Another program's file in the folder (a Finder's, an NFS client's): not ours, and it must not stop the sweep.
    (blobs / "files" / ".DS_Store").write_bytes(b"finder")
    for old in ("files/.DS_Store", "files/tombstoned", f"files/{deleted.id}", "files/file-orphan", ".tmp/dead.part"):
        _age(blobs / old)
    for file_id in (kept.id, batch_input):
        _age(blobs / "files" / file_id)

    removed = await harness.container.sweeper.sweep()

    assert removed == (3, 1)
    left = sorted(path.relative_to(blobs).as_posix() for path in blobs.rglob("*") if path.is_file())
    assert left == sorted(
        [".tmp/live.part", "files/.DS_Store", "files/file-in-flight", f"files/{kept.id}", f"files/{batch_input}"]
    )
    assert (await client.files.content(kept.id)).content == b"still here"


async def test_the_worker_sweeps_when_it_starts(
    settings_for: Callable[..., Any], start_oasis: Callable[..., Any]
) -> None:
    blobs = settings_for().blobs_dir
    (blobs / "files").mkdir(parents=True)
    (blobs / "files" / "file-orphan").write_bytes(b"orphan")
    _age(blobs / "files" / "file-orphan")
    await start_oasis()
    for _ in range(100):
        if not (blobs / "files" / "file-orphan").exists():
            break
        await asyncio.sleep(0.05)
    assert not (blobs / "files" / "file-orphan").exists()


async def test_sweep_keeps_live_containers_files_and_removes_those_of_deleted_or_expired_ones(
    start_oasis: Callable[..., Any],
) -> None:
    from sqlalchemy import update

    from oasis.storage.tables import CodeContainer

    harness: Harness = await start_oasis(workers={"in_process": False})
    client = harness.sdk()
    if not hasattr(client, "containers"):
        pytest.skip("this SDK has no Containers API")
    blobs = harness.container.settings.blobs_dir
    live, deleted, expired = [await client.containers.create(name=name) for name in ("live", "deleted", "expired")]
    for made in (live, deleted, expired):
        await client.containers.files.create(made.id, file=("a.txt", io.BytesIO(b"in a container")))
    await client.containers.delete(deleted.id)
    async with harness.container.db.session() as session:
        await session.execute(update(CodeContainer).where(CodeContainer.id == expired.id).values(last_active_at=0))
        await session.commit()
    for path in (blobs / "containers").rglob("*"):
        if path.is_file():
            _age(path)

    removed, _ = await harness.container.sweeper.sweep()

    assert removed == 2
    left = [
        path.relative_to(blobs / "containers").parts[0] for path in (blobs / "containers").rglob("*") if path.is_file()
    ]
    assert left == [live.id]
    (file,) = (await client.containers.files.list(live.id)).data
    assert (await client.containers.files.content.retrieve(file.id, container_id=live.id)).read() == b"in a container"
