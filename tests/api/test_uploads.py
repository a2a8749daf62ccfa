"""The Uploads API (after the 2.0.0 spec): a file sent in parts and completed into a File, through newer SDKs'
`client.uploads` (and its `upload_file_chunked`) and as plain requests, which the May-2024 SDK would send."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import pytest
from sqlalchemy import update

from oasis.blobs import BlobNotFound
from oasis.storage import uploads as upload_rows
from oasis.storage.tables import Upload
from tests.conftest import Harness

TEXT = b"".join(f"Line {i}: the lighthouse keeper counted the ships.\n".encode() for i in range(3000))


async def _create(harness: Harness, **body: Any) -> dict[str, Any]:
    async with harness.http() as http:
        response = await http.post("/v1/uploads", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _part(harness: Harness, upload_id: str, data: bytes) -> Any:
    async with harness.http() as http:
        return await http.post(f"/v1/uploads/{upload_id}/parts", files={"data": ("blob", data)})


async def _stored(harness: Harness, key: str) -> bool:
    try:
        await harness.container.blobs.size(key)
    except BlobNotFound:
        return False
    return True


async def _post(harness: Harness, path: str, **body: Any) -> Any:
    async with harness.http() as http:
        return await http.post(path, json=body)


async def test_a_file_sent_in_parts_by_the_sdk_is_one_file(oasis: Harness) -> None:
    client = oasis.sdk()
    if not hasattr(client, "uploads"):
        pytest.skip("this SDK has no uploads")
    upload = await client.uploads.upload_file_chunked(
        file=TEXT,
        filename="ships.txt",
        bytes=len(TEXT),
        mime_type="text/plain",
        purpose="assistants",
        part_size=40_000,  # 4 parts
        md5=hashlib.md5(TEXT).hexdigest(),
    )
    assert upload.status == "completed" and upload.object == "upload" and upload.bytes == len(TEXT)
    assert upload.file is not None and upload.file.filename == "ships.txt" and upload.file.bytes == len(TEXT)
    assert upload.expires_at == upload.created_at + 3600
    assert (await client.files.content(upload.file.id)).content == TEXT
    assert upload.file.id in {file.id for file in (await client.files.list()).data}


async def test_parts_are_joined_in_the_order_named_and_refusals_name_their_param(oasis: Harness) -> None:
    pieces = [b"alpha,", b"beta,", b"gamma"]
    upload = await _create(oasis, filename="x.csv", purpose="assistants", bytes=16, mime_type="text/csv")
    assert (upload["status"], upload["file"], upload["object"]) == ("pending", None, "upload")
    parts = []
    for piece in pieces:
        response = await _part(oasis, upload["id"], piece)
        assert response.status_code == 200, response.text
        parts.append(response.json())
    assert parts[0]["object"] == "upload.part" and parts[0]["upload_id"] == upload["id"]
    spare = (await _part(oasis, upload["id"], b"not used")).json()
    complete = f"/v1/uploads/{upload['id']}/complete"

    refusals: list[tuple[dict[str, Any], str]] = [
        ({"part_ids": [parts[0]["id"], parts[1]["id"]]}, "part_ids"),  # 11 bytes, not 16
        ({"part_ids": [parts[0]["id"], parts[0]["id"], parts[2]["id"]]}, "part_ids"),
        ({"part_ids": [parts[0]["id"], "part_nope", parts[2]["id"]]}, "part_ids"),
        ({"part_ids": []}, "part_ids"),
        ({}, "part_ids"),
        ({"part_ids": [p["id"] for p in parts], "md5": hashlib.md5(b"other").hexdigest()}, "md5"),
    ]
    for body, param in refusals:
        response = await _post(oasis, complete, **body)
        assert response.status_code == 400 and response.json()["error"]["param"] == param, (body, response.text)

    order = [parts[2]["id"], parts[0]["id"], parts[1]["id"]]
    done = (await _post(oasis, complete, part_ids=order, md5=hashlib.md5(b"gamma" + b"alpha,beta,").hexdigest())).json()
    assert done["status"] == "completed" and done["file"]["bytes"] == 16, done
    client = oasis.sdk()
    assert (await client.files.content(done["file"]["id"])).content == b"gammaalpha,beta,"
    # ended: no more parts or cancels; its parts' bytes are gone (the spare one too); a completion asked again
    # (a client's retry after a timeout) answers the completed upload, with its one file
    for response in (
        await _part(oasis, upload["id"], b"late"),
        await _post(oasis, f"/v1/uploads/{upload['id']}/cancel"),
    ):
        assert response.status_code == 400 and "completed" in response.json()["error"]["message"], response.text
    assert (await _post(oasis, complete, part_ids=order)).json() == done
    for key in (f"uploads/{upload['id']}/{part['id']}" for part in [*parts, spare]):
        assert not await _stored(oasis, key)


async def test_bad_uploads_are_refused_and_other_projects_see_none(oasis: Harness) -> None:
    good = {"filename": "a.txt", "purpose": "assistants", "bytes": 5, "mime_type": "text/plain"}
    for changed, param in (
        ({"purpose": "pictures"}, "purpose"),
        ({"bytes": 8 * 1024**3 + 1}, "bytes"),
        ({"bytes": 0}, "bytes"),
        ({"bytes": "5"}, "bytes"),
        ({"filename": ""}, "filename"),
        ({"mime_type": None}, "mime_type"),
        ({"expires_after": {"anchor": "created_at", "seconds": 60}}, "expires_after.seconds"),
    ):
        response = await _post(oasis, "/v1/uploads", **{**good, **changed})
        assert response.status_code == 400 and response.json()["error"]["param"] == param, (changed, response.text)
    _, our_key = await oasis.container.keys.create("ours")
    _, their_key = await oasis.container.keys.create("theirs")
    async with oasis.http(api_key=our_key) as ours, oasis.http(api_key=their_key) as theirs:
        upload = (await ours.post("/v1/uploads", json=good)).json()
        base = f"/v1/uploads/{upload['id']}"
        for response in (
            await theirs.post(f"{base}/parts", files={"data": ("blob", b"x")}),
            await theirs.post(f"{base}/complete", json={"part_ids": ["x"]}),
            await theirs.post(f"{base}/cancel"),
            await ours.post("/v1/uploads/upload_nope/parts", files={"data": ("blob", b"x")}),
        ):
            assert response.status_code == 404 and response.json()["error"]["param"] == "upload_id", response.text
        cancelled = (await ours.post(f"{base}/cancel")).json()
    assert cancelled["status"] == "cancelled"


async def test_a_batch_file_sent_in_parts_is_checked_as_an_upload_is(oasis: Harness) -> None:
    line = {"custom_id": "a", "method": "POST", "url": "/v1/embeddings", "body": {"model": "m", "input": "x"}}
    data = (json.dumps(line) + "\n" + json.dumps(line) + "\n").encode()  # the same custom_id twice
    upload = await _create(oasis, filename="b.jsonl", purpose="batch", bytes=len(data), mime_type="text/jsonl")
    part = (await _part(oasis, upload["id"], data)).json()
    response = await _post(oasis, f"/v1/uploads/{upload['id']}/complete", part_ids=[part["id"]])
    assert response.status_code == 400 and "line 2" in response.json()["error"]["message"], response.text
    assert (await oasis.sdk().files.list(purpose="batch")).data == []


async def _expire(harness: Harness, upload_id: str, seconds_ago: int) -> None:
    async with harness.container.db.session() as session:
        moment = int(time.time()) - seconds_ago
        await session.execute(update(Upload).where(Upload.id == upload_id).values(expires_at=moment))
        await session.commit()


async def test_an_upload_past_its_hour_is_expired_and_its_parts_are_swept(oasis: Harness) -> None:
    upload = await _create(oasis, filename="a.txt", purpose="assistants", bytes=5, mime_type="text/plain")
    part = (await _part(oasis, upload["id"], b"hello")).json()
    key = f"uploads/{upload['id']}/{part['id']}"
    assert await oasis.container.sweeper.sweep(grace_seconds=0) == (0, 0)  # a pending upload's part is kept
    assert await _stored(oasis, key)
    await _expire(oasis, upload["id"], 0)
    response = await _post(oasis, f"/v1/uploads/{upload['id']}/complete", part_ids=[part["id"]])
    assert response.status_code == 400 and "expired" in response.json()["error"]["message"], response.text
    # kept an hour past its expiry (a completion begun before it reads them to the end), then swept
    await oasis.container.sweeper.sweep(grace_seconds=0)
    assert await _stored(oasis, key)
    await _expire(oasis, upload["id"], 3601)
    await oasis.container.sweeper.sweep(grace_seconds=0)
    assert not await _stored(oasis, key)


async def test_a_completion_cut_off_after_its_file_was_made_makes_it_once(
    oasis: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between storing the file and marking the upload completed: completing again finds that file."""
    upload = await _create(oasis, filename="a.txt", purpose="assistants", bytes=5, mime_type="text/plain")
    part = (await _part(oasis, upload["id"], b"hello")).json()
    marking = upload_rows.end

    async def cut_off(*args: Any, **kwargs: Any) -> bool:
        monkeypatch.setattr(upload_rows, "end", marking)
        raise ConnectionError("the database went away")

    monkeypatch.setattr(upload_rows, "end", cut_off)
    complete = f"/v1/uploads/{upload['id']}/complete"
    assert (await _post(oasis, complete, part_ids=[part["id"]])).status_code == 500
    done = (await _post(oasis, complete, part_ids=[part["id"]])).json()
    assert done["status"] == "completed", done
    listed = [file for file in (await oasis.sdk().files.list()).data if file.filename == "a.txt"]
    assert [file.id for file in listed] == [done["file"]["id"]]


async def test_two_completions_at_once_make_one_file(oasis: Harness) -> None:
    """A client's retry while its first completion still runs: both answer the one completed upload."""
    data = TEXT[:200_000]
    upload = await _create(oasis, filename="big.txt", purpose="assistants", bytes=len(data), mime_type="text/plain")
    parts = [(await _part(oasis, upload["id"], data[i : i + 50_000])).json()["id"] for i in range(0, len(data), 50_000)]
    complete = f"/v1/uploads/{upload['id']}/complete"
    first, second = await asyncio.gather(_post(oasis, complete, part_ids=parts), _post(oasis, complete, part_ids=parts))
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["file"]["id"] == second.json()["file"]["id"]
    listed = [file.id for file in (await oasis.sdk().files.list()).data if file.filename == "big.txt"]
    assert listed == [first.json()["file"]["id"]]
    assert (await oasis.sdk().files.content(listed[0])).content == data
