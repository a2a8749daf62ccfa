"""The expiry job deletes files past their `expires_at` as a delete does, keeping the bytes a job still reads
(as test_blob_sweeper checks for a deleted file, the sweeper then leaves them while the batch is unfinished)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from sqlalchemy import update

from oasis.storage.tables import StoredFile
from oasis.workers.file_expiry import FileExpiry
from tests.api.test_batches import jsonl, request
from tests.conftest import Harness

POLICY: Any = {"expires_after": {"anchor": "created_at", "seconds": 3600}}


async def test_expired_files_are_deleted_but_for_the_bytes_an_unfinished_batch_still_reads(
    start_oasis: Callable[..., Any],
) -> None:
    harness: Harness = await start_oasis(workers={"in_process": False})  # the batch waits: nothing runs it
    client = harness.sdk()
    files = harness.container.settings.blobs_dir / "files"
    line = request("a", "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})
    batch_input = await client.files.create(
        file=("requests.jsonl", io.BytesIO(jsonl([line]))), purpose="batch", extra_body=POLICY
    )
    await client.batches.create(input_file_id=batch_input.id, endpoint="/v1/embeddings", completion_window="24h")
    notes = await client.files.create(file=("notes.txt", b"notes"), purpose="assistants", extra_body=POLICY)
    expiry = FileExpiry(harness.container.files, interval_seconds=3600)
    assert await expiry.run_next("test") is False
    assert (await client.files.retrieve(notes.id)).id == notes.id  # not expired: nothing done

    async with harness.container.db.session() as session:
        await session.execute(update(StoredFile).values(expires_at=int(time.time()) - 1))
        await session.commit()
    assert await expiry.run_next("test") is False  # not due again within its interval
    assert (files / notes.id).exists()
    await FileExpiry(harness.container.files).run_next("test")
    for gone in (notes.id, batch_input.id):
        with pytest.raises(openai.NotFoundError):
            await client.files.retrieve(gone)
    assert not (files / notes.id).exists()
    assert (files / batch_input.id).exists()  # the batch has not read it yet
