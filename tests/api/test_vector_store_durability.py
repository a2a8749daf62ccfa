"""Vector stores under concurrency and at size: one attachment per file however many adds race, and deleting a
large store never holds the database's write lock for the whole delete."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest
from sqlalchemy import event, func, select

from oasis.storage import vector_stores as store_rows
from oasis.storage.tables import VectorStore, VectorStoreChunk
from tests.api.test_vector_stores import DOCUMENTS, completed_store, stores, upload, wait_for
from tests.conftest import Harness


async def test_concurrent_adds_of_one_file_attach_it_once(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    file_id = await upload(client, "tax.txt", DOCUMENTS["tax.txt"])
    store = await stores(client).create(name="racing")
    added = await asyncio.gather(
        *(stores(client).files.create(vector_store_id=store.id, file_id=file_id) for _ in range(6))
    )
    assert {item.id for item in added} == {file_id}

    async def done() -> Any:
        current = await stores(client).retrieve(store.id)
        return current if current.file_counts.in_progress == 0 else None

    finished = await wait_for(done)
    assert finished.file_counts.total == 1 and finished.file_counts.completed == 1
    listed = await stores(client).files.list(vector_store_id=store.id)
    assert [item.id for item in listed.data] == [file_id]
    async with embed_oasis.container.db.session() as session:
        positions = await session.scalars(
            select(VectorStoreChunk.position).where(VectorStoreChunk.vector_store_id == store.id)
        )
        found = list(positions)
    assert sorted(found) == list(range(len(found)))  # each chunk once


async def test_threads_sharing_a_store_attach_one_file_at_once_without_errors(embed_oasis: Harness) -> None:
    """Messages in two threads that share one vector store attach the same file at the same moment: both are
    created, and the store holds the file once (on PostgreSQL the second insert broke the unique index: 500)."""
    client = embed_oasis.sdk()
    store = await stores(client).create(name="shared")
    resources: Any = {"file_search": {"vector_store_ids": [store.id]}}
    threads = [await client.beta.threads.create(tool_resources=resources) for _ in range(4)]
    file_ids = [await upload(client, f"racing-{n}.txt", DOCUMENTS["tax.txt"]) for n in range(3)]
    for file_id in file_ids:
        attachment: Any = {"file_id": file_id, "tools": [{"type": "file_search"}]}
        made = await asyncio.gather(
            *(
                client.beta.threads.messages.create(thread.id, role="user", content="tax?", attachments=[attachment])
                for thread in threads
            )
        )
        assert all(message.attachments[0].file_id == file_id for message in made)  # type: ignore[index]
    listed = await stores(client).files.list(vector_store_id=store.id, limit=100)
    assert sorted(item.id for item in listed.data) == sorted(file_ids)


async def test_a_file_attached_while_it_is_deleted_is_not_left_in_the_store(embed_oasis: Harness) -> None:
    """Attach and delete at the same moment: the attach is refused (404) or the delete takes the attachment out
    too. Never a live attachment of a deleted file (on PostgreSQL the delete did not see the attach coming)."""
    client = embed_oasis.sdk()
    store = await stores(client).create(name="racing deletes")
    for n in range(10):
        file_id = await upload(client, f"gone-{n}.txt", DOCUMENTS["tax.txt"])
        attached, deleted = await asyncio.gather(
            stores(client).files.create(vector_store_id=store.id, file_id=file_id),
            client.files.delete(file_id),
            return_exceptions=True,
        )
        assert not isinstance(deleted, BaseException), deleted
        assert not isinstance(attached, BaseException) or isinstance(attached, openai.NotFoundError), attached
        listed = await stores(client).files.list(vector_store_id=store.id, limit=100)
        assert file_id not in {item.id for item in listed.data}


async def _chunk_count(harness: Harness, store_id: str) -> int:
    async with harness.container.db.session() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(VectorStoreChunk).where(VectorStoreChunk.vector_store_id == store_id)
            )
            or 0
        )


async def _add_chunks(harness: Harness, store_id: str, count: int) -> None:
    async with harness.container.db.session() as session:
        session.add_all(
            VectorStoreChunk(
                vector_store_id=store_id, file_seq=10_000 + n, file_id="file-bulk", position=0, text="x", embedding=b""
            )
            for n in range(count)
        )
        await session.commit()


async def test_a_large_store_is_deleted_in_bounded_steps(embed_oasis: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_rows, "PURGE_STEP", 100)
    store_id, _ = await completed_store(embed_oasis, {"tax.txt": DOCUMENTS["tax.txt"]})
    await _add_chunks(embed_oasis, store_id, 1000)
    largest: list[int] = []

    def watch(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE FROM VECTOR_STORE_CHUNKS"):
            largest.append(cursor.rowcount)

    engine = embed_oasis.container.db.engine.sync_engine
    event.listen(engine, "after_cursor_execute", watch)
    try:
        deleted = await stores(embed_oasis.sdk()).delete(store_id)
    finally:
        event.remove(engine, "after_cursor_execute", watch)
    assert deleted.deleted
    assert await _chunk_count(embed_oasis, store_id) == 0
    assert len(largest) >= 10 and max(largest) <= 100


async def test_chunks_a_crash_left_behind_a_deleted_store_are_swept(start_oasis: Callable[..., Any]) -> None:
    harness: Harness = await start_oasis(workers={"in_process": False})
    store = await stores(harness.sdk()).create(name="half-deleted")
    await _add_chunks(harness, store.id, 250)
    async with harness.container.db.session() as session:  # the tombstone committed, then the process died
        row = await session.scalar(select(VectorStore).where(VectorStore.id == store.id))
        assert row is not None
        row.deleted_at = 1
        await session.commit()
    await harness.container.sweeper.sweep()
    assert await _chunk_count(harness, store.id) == 0
