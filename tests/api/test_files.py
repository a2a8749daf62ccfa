"""Files API through the official SDK: upload, list, retrieve, delete, content, checks, limits, isolation."""

from __future__ import annotations

import inspect
import io
import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from sqlalchemy import update

from oasis.storage.tables import StoredFile
from tests.conftest import Harness

# Older SDKs (openai 1.30.5, May 2024) read the file list in one reply and have no cursor parameters.
SDK_PAGES_FILES = "after" in inspect.signature(openai.resources.files.AsyncFiles.list).parameters
needs_cursor_sdk = pytest.mark.skipif(not SDK_PAGES_FILES, reason="this openai SDK does not page files.list")


def _jsonl(*rows: object) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def _batch_line(custom_id: str, **changes: object) -> dict[str, object]:
    line: dict[str, object] = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    }
    line.update(changes)
    return line


def _example(*roles: str) -> dict[str, object]:
    return {"messages": [{"role": role, "content": f"{role} text"} for role in roles]}


async def test_upload_retrieve_download_is_byte_exact(client: openai.AsyncOpenAI) -> None:
    payload = bytes(range(256)) * 1000 + b"\r\n\x00end"
    created = await client.files.create(file=("blob.bin", io.BytesIO(payload)), purpose="assistants")

    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(payload)
    assert created.filename == "blob.bin"
    assert created.purpose == "assistants"
    assert created.status == "processed"
    assert created.created_at > 1_700_000_000

    fetched = await client.files.retrieve(created.id)
    assert fetched.model_dump() == created.model_dump()

    content = await client.files.content(created.id)
    assert content.content == payload
    assert content.response.headers["content-type"] == "application/octet-stream"
    assert content.response.headers["content-length"] == str(len(payload))


async def test_a_file_name_like_a_data_url_downloads(client: openai.AsyncOpenAI) -> None:
    """mimetypes reads "data:text/ア,x" as a data URL whose type is "text/ア", which no header can carry."""
    created = await client.files.create(file=("data:text/ア,x", b"hello"), purpose="assistants")
    content = await client.files.content(created.id)
    assert content.content == b"hello"
    assert content.response.headers["content-type"] == "application/octet-stream"


async def test_download_content_type_follows_the_file_name(client: openai.AsyncOpenAI) -> None:
    created = await client.files.create(file=("notes.md", b"# title\n"), purpose="assistants")
    content = await client.files.content(created.id)
    assert content.response.headers["content-type"].startswith("text/markdown")
    batch = await client.files.create(file=("in.jsonl", _jsonl(_batch_line("a"))), purpose="batch")
    assert (await client.files.content(batch.id)).response.headers["content-type"] == "application/jsonl"


@pytest.mark.parametrize("purpose", ["assistants", "vision", "batch", "fine-tune"])
async def test_every_upload_purpose_is_accepted(client: openai.AsyncOpenAI, purpose: str) -> None:
    body = {"batch": _jsonl(_batch_line("x")), "fine-tune": _jsonl(_example("user", "assistant"))}.get(
        purpose, b"\x89PNG not really"
    )
    created = await client.files.create(file=("f.jsonl", body), purpose=purpose)  # type: ignore[arg-type]
    assert created.purpose == purpose


async def test_unknown_purpose_is_a_400_naming_purpose(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.files.create(file=("f.txt", b"x"), purpose="fine-tune-results")  # type: ignore[arg-type]
    assert caught.value.status_code == 400
    assert caught.value.param == "purpose"  # type: ignore[attr-defined]
    assert (await client.files.list()).data == []


async def test_missing_parts_are_400s(oasis: Harness) -> None:
    async with oasis.http() as http:
        no_file = await http.post("/v1/files", data={"purpose": "assistants"}, files={"other": ("a", b"1")})
        no_purpose = await http.post("/v1/files", files={"file": ("a.txt", b"1")})
        not_multipart = await http.post("/v1/files", json={"purpose": "assistants"})
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    assert no_purpose.status_code == 400 and no_purpose.json()["error"]["param"] == "purpose"
    assert not_multipart.status_code == 400 and not_multipart.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("lines", "bad_line", "words"),
    [
        ([_batch_line("a"), b"{not json", _batch_line("c")], 2, "not valid JSON"),
        ([_batch_line("a"), _batch_line("b"), _batch_line("a")], 3, "already used on line 1"),
        ([_batch_line("a"), _batch_line("b", method="GET")], 2, "method"),
        ([_batch_line("a", url="/v1/audio/speech")], 1, "url"),
        ([_batch_line("a", body="text")], 1, "body"),
        ([_batch_line("")], 1, "custom_id"),
        ([[1, 2]], 1, "JSON object"),
        ([_batch_line("a"), b"[" * 100_000], 2, "nested too deeply"),
        ([_batch_line("a"), b'{"n": ' + b"9" * 5000 + b"}"], 2, "not usable JSON"),
        ([_batch_line("a"), _batch_line("b\ud800")], 2, "custom_id"),
    ],
)
async def test_bad_batch_file_names_first_bad_line_and_stores_nothing(
    client: openai.AsyncOpenAI, lines: list[object], bad_line: int, words: str
) -> None:
    raw = b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines) + b"\n"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.files.create(file=("batch.jsonl", raw), purpose="batch")
    message = caught.value.message
    assert f"line {bad_line}" in message and words in message
    assert (await client.files.list()).data == []


async def test_batch_files_are_held_to_openais_limits(
    client: openai.AsyncOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most 50,000 requests and 200 MB: a larger file is refused at upload, not failed a day later."""
    from oasis.services.files import service

    line = json.dumps(_batch_line("x")).encode()
    many = b"".join(line.replace(b'"x"', f'"r{i}"'.encode()) + b"\n" for i in range(50_001))
    with pytest.raises(openai.BadRequestError) as too_many:
        await client.files.create(file=("many.jsonl", many), purpose="batch")
    assert "line 50001" in too_many.value.message and "50,000" in too_many.value.message
    just_enough = many[: many.rindex(b"\n", 0, -1) + 1]
    assert (await client.files.create(file=("enough.jsonl", just_enough), purpose="batch")).bytes == len(just_enough)

    monkeypatch.setattr(service, "MAX_BATCH_FILE_BYTES", len(line))  # 200 MB is too much to send in a test
    with pytest.raises(openai.BadRequestError) as too_big:
        await client.files.create(file=("big.jsonl", line + b"\n"), purpose="batch")
    assert too_big.value.body["param"] == "file" and "batch input file" in too_big.value.message  # type: ignore[index]
    assert (await client.files.create(file=("doc.jsonl", line + b"\n"), purpose="assistants")).bytes == len(line) + 1


@pytest.mark.parametrize(
    ("examples", "bad_line", "words"),
    [
        ([_example("user", "assistant"), _example("system", "user")], 2, "no assistant message"),
        ([_example("user", "robot", "assistant")], 1, "messages[1].role"),
        ([{"prompt": "a", "completion": "b"}], 1, "messages"),
        (
            [
                _example("user", "assistant"),
                {"messages": [{"role": "user", "content": "hi \udc00"}, _example("assistant")["messages"][0]]},
            ],
            2,
            "messages[0].content holds a lone surrogate",
        ),
    ],
)
async def test_bad_fine_tune_file_names_first_bad_line(
    client: openai.AsyncOpenAI, examples: list[object], bad_line: int, words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.files.create(file=("train.jsonl", _jsonl(*examples)), purpose="fine-tune")
    assert f"line {bad_line}" in caught.value.message and words in caught.value.message
    assert (await client.files.list()).data == []


async def test_empty_batch_file_is_refused(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="no lines"):
        await client.files.create(file=("batch.jsonl", b"\n"), purpose="batch")


async def test_list_filters_by_purpose_and_orders(client: openai.AsyncOpenAI) -> None:
    first = await client.files.create(file=("a.txt", b"a"), purpose="assistants")
    second = await client.files.create(file=("b.jsonl", _jsonl(_batch_line("x"))), purpose="batch")
    third = await client.files.create(file=("c.txt", b"c"), purpose="assistants")

    newest_first = [f.id for f in (await client.files.list()).data]
    assert newest_first == [third.id, second.id, first.id]
    oldest_first = [f.id async for f in client.files.list(extra_query={"order": "asc"})]
    assert oldest_first == [first.id, second.id, third.id]
    assistants = [f.id async for f in client.files.list(purpose="assistants")]
    assert assistants == [third.id, first.id]


async def test_one_plain_list_call_returns_every_file(client: openai.AsyncOpenAI) -> None:
    ids = [(await client.files.create(file=(f"{n}.txt", b"x"), purpose="assistants")).id for n in range(25)]
    page = await client.files.list()
    assert [f.id for f in page.data] == ids[::-1]  # more than 20: files are OpenAI's exception to paging


@needs_cursor_sdk
async def test_list_pages_with_after_in_both_orders(client: openai.AsyncOpenAI) -> None:
    ids = [(await client.files.create(file=(f"{n}.txt", b"x"), purpose="assistants")).id for n in range(7)]
    page = await client.files.list(limit=3)
    assert [f.id for f in page.data] == ids[::-1][:3]
    assert page.has_more is True
    everything_desc = [f.id async for f in client.files.list(limit=3)]
    everything_asc = [f.id async for f in client.files.list(limit=2, order="asc")]
    assert everything_desc == ids[::-1]
    assert everything_asc == ids
    last = await client.files.list(limit=3, after=ids[2])
    assert [f.id for f in last.data] == [ids[1], ids[0]] and last.has_more is False


async def test_files_limit_runs_to_ten_thousand(oasis: Harness) -> None:
    async with oasis.http() as http:
        assert (await http.get("/v1/files", params={"limit": 10_000})).status_code == 200
        too_many = await http.get("/v1/files", params={"limit": 10_001})
        zero = await http.get("/v1/files", params={"limit": 0})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "limit"
    assert zero.status_code == 400 and zero.json()["error"]["param"] == "limit"


async def test_delete_removes_row_and_blob(oasis: Harness, client: openai.AsyncOpenAI) -> None:
    created = await client.files.create(file=("gone.txt", b"bye"), purpose="assistants")
    blob = oasis.container.settings.blobs_dir / "files" / created.id
    assert blob.read_bytes() == b"bye"

    deleted = await client.files.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "file", True)
    assert not blob.exists()
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.files.delete(created.id)


@needs_cursor_sdk
async def test_deleting_while_paging_visits_every_file(client: openai.AsyncOpenAI) -> None:
    for n in range(5):
        await client.files.create(file=(f"{n}.txt", b"x"), purpose="assistants")
    deleted = 0
    async for file in client.files.list(limit=2):
        await client.files.delete(file.id)
        deleted += 1
    assert deleted == 5
    assert (await client.files.list()).data == []


async def test_upload_over_the_limit_is_413_and_stores_nothing(start_oasis) -> None:  # type: ignore[no-untyped-def]
    harness: Harness = await start_oasis(files={"max_upload_bytes": 1000})
    client = harness.sdk()
    with pytest.raises(openai.APIStatusError) as just_over:
        await client.files.create(file=("big.bin", b"x" * 1001), purpose="assistants")
    with pytest.raises(openai.APIStatusError) as far_over:
        await client.files.create(file=("huge.bin", b"x" * 3_000_000), purpose="assistants")
    assert just_over.value.status_code == 413 and far_over.value.status_code == 413
    assert (await client.files.create(file=("ok.bin", b"x" * 1000), purpose="assistants")).bytes == 1000
    assert len((await client.files.list()).data) == 1
    async with harness.http() as http:
        health = (await http.get("/health")).json()
    assert health["max_upload_bytes"] == 1000


async def test_a_commit_whose_answer_is_lost_keeps_the_files_bytes(
    client: openai.AsyncOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database took the row but the answer never came (a dropped connection): the upload fails, yet the
    row exists, so its bytes must stay, or the file lists and cannot be read."""
    from sqlalchemy.ext.asyncio import AsyncSession

    from oasis.storage import files as file_rows

    real_commit, real_add = AsyncSession.commit, file_rows.add_file
    adding: set[int] = set()

    async def add_file(session: AsyncSession, row: Any) -> None:
        adding.add(id(session))
        await real_add(session, row)

    async def commit_then_lose_the_answer(self: AsyncSession) -> None:
        await real_commit(self)
        if id(self) in adding:
            raise OSError("connection reset while reading the commit's answer")

    monkeypatch.setattr(file_rows, "add_file", add_file)
    monkeypatch.setattr(AsyncSession, "commit", commit_then_lose_the_answer)
    with pytest.raises(openai.InternalServerError):
        await client.with_options(max_retries=0).files.create(file=("notes.txt", b"kept bytes"), purpose="assistants")
    monkeypatch.undo()
    (listed,) = (await client.files.list()).data
    assert (await client.files.content(listed.id)).content == b"kept bytes"


async def test_unknown_file_is_404(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.files.retrieve("file-doesnotexist")
    assert "file-doesnotexist" in caught.value.message


async def test_batch_files_expire_after_thirty_days_unless_asked_otherwise(start_oasis: Callable[..., Any]) -> None:
    client = (await start_oasis()).sdk()
    batch = await client.files.create(file=("in.jsonl", _jsonl(_batch_line("a"))), purpose="batch")
    assert batch.model_dump()["expires_at"] == batch.created_at + 30 * 24 * 3600  # OpenAI's default
    assert (await client.files.retrieve(batch.id)).model_dump()["expires_at"] == batch.model_dump()["expires_at"]
    policy: Any = {"expires_after": {"anchor": "created_at", "seconds": 7200}}
    sooner = await client.files.create(file=("in.jsonl", _jsonl(_batch_line("a"))), purpose="batch", extra_body=policy)
    assert sooner.model_dump()["expires_at"] == sooner.created_at + 7200
    other = await client.files.create(file=("notes.txt", b"kept"), purpose="assistants")
    assert other.model_dump().get("expires_at") is None  # every other purpose is kept until deleted

    keeping = (await start_oasis(files={"batch_expiry_seconds": None})).sdk()  # configured to keep them
    kept = await keeping.files.create(file=("in.jsonl", _jsonl(_batch_line("a"))), purpose="batch")
    assert kept.model_dump().get("expires_at") is None


async def test_a_file_asked_to_expire_is_gone_once_it_has(start_oasis: Callable[..., Any]) -> None:
    """`expires_after` (OpenAI added it after the 2.0.0 spec; sent as the SDK sends it, as form fields): the file
    carries `expires_at`; past it the file answers 404 everywhere and leaves the list, and the expiry job deletes it
    as a delete does (its bytes go)."""
    oasis: Harness = await start_oasis(workers={"in_process": False})  # the expiry runs when this test says
    client = oasis.sdk()
    policy: Any = {"expires_after": {"anchor": "created_at", "seconds": 3600}}
    expiring = await client.files.create(file=("soon.txt", b"short-lived"), purpose="assistants", extra_body=policy)
    kept = await client.files.create(file=("kept.txt", b"kept"), purpose="assistants")
    assert expiring.model_dump()["expires_at"] == expiring.created_at + 3600
    assert (await client.files.retrieve(expiring.id)).model_dump()["expires_at"] == expiring.created_at + 3600
    assert kept.model_dump().get("expires_at") is None
    for bad, param in (
        ({"anchor": "created_at", "seconds": 60}, "expires_after.seconds"),
        ({"anchor": "created_at", "seconds": "soon"}, "expires_after.seconds"),
        ({"anchor": "last_active_at", "seconds": 3600}, "expires_after.anchor"),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.files.create(file=("x.txt", b"x"), purpose="assistants", extra_body={"expires_after": bad})
        assert refused.value.param == param

    blob = oasis.container.settings.blobs_dir / "files" / expiring.id
    assert blob.read_bytes() == b"short-lived"
    assert await oasis.container.files.delete_expired() == 0  # not yet
    async with oasis.container.db.session() as session:  # an hour later
        await session.execute(
            update(StoredFile).where(StoredFile.id == expiring.id).values(expires_at=int(time.time()) - 1)
        )
        await session.commit()
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(expiring.id)
    with pytest.raises(openai.NotFoundError):
        await client.files.content(expiring.id)
    assert expiring.id not in {file.id for file in (await client.files.list()).data}
    thread = await client.beta.threads.create()
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.messages.create(
            thread.id, role="user", content="see", attachments=[{"file_id": expiring.id, "tools": []}]
        )
    assert await oasis.container.files.delete_expired() == 1
    assert not blob.exists()
    assert await oasis.container.files.delete_expired() == 0
    assert (await client.files.retrieve(kept.id)).id == kept.id
