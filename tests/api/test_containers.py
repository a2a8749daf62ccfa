"""The Containers API through the SDK's `client.containers`: containers made with copies of the project's files,
listed, retrieved, expired and deleted; their files uploaded, copied by `file_id`, listed, read and deleted; and
the errors a client gets for bad input. (Code running in a container: test_responses_code_interpreter.)"""

from __future__ import annotations

import io
from typing import Any

import openai
import pytest
from sqlalchemy import update

from oasis.storage.tables import CodeContainer
from tests.conftest import Harness


def _newer_sdk(client: openai.AsyncOpenAI) -> None:
    if not hasattr(client, "containers"):
        pytest.skip("this SDK has no Containers API")


async def test_a_container_holds_copies_of_files_and_files_sent_to_it(oasis: Harness) -> None:
    client = oasis.sdk()
    _newer_sdk(client)
    sales = await client.files.create(file=("sales.csv", b"month,total\n1,10\n2,20\n"), purpose="user_data")
    made = await client.containers.create(
        name="analysis", file_ids=[sales.id], expires_after={"anchor": "last_active_at", "minutes": 30}
    )
    assert made.id.startswith("cntr_") and made.object == "container" and made.name == "analysis"
    assert made.status == "running" and made.expires_after is not None and made.expires_after.minutes == 30
    assert made.last_active_at is not None and made.last_active_at >= made.created_at

    (copied,) = (await client.containers.files.list(made.id)).data
    assert copied.id.startswith("cfile_") and copied.object == "container.file" and copied.source == "user"
    assert copied.path == "/mnt/data/sales.csv" and copied.bytes == sales.bytes and copied.container_id == made.id
    content = await client.containers.files.content.retrieve(copied.id, container_id=made.id)
    assert content.read() == b"month,total\n1,10\n2,20\n"
    # a copy: deleting the project's file leaves the container's
    await client.files.delete(sales.id)
    assert (await client.containers.files.retrieve(copied.id, container_id=made.id)).bytes == copied.bytes

    uploaded = await client.containers.files.create(made.id, file=("notes.txt", io.BytesIO(b"hello")))
    assert uploaded.path == "/mnt/data/notes.txt" and uploaded.bytes == 5 and uploaded.source == "user"
    readme = await client.files.create(file=("readme.md", b"# read me"), purpose="user_data")
    by_id = await client.containers.files.create(made.id, file_id=readme.id)
    assert by_id.path == "/mnt/data/readme.md" and by_id.bytes == 9
    # a file sent again under a name it has replaces the one there
    again = await client.containers.files.create(made.id, file=("notes.txt", io.BytesIO(b"hello again")))
    listed = (await client.containers.files.list(made.id, order="asc")).data
    assert [(file.path, file.bytes) for file in listed] == [
        ("/mnt/data/sales.csv", copied.bytes),
        ("/mnt/data/readme.md", 9),
        ("/mnt/data/notes.txt", 11),
    ]
    assert listed[-1].id == again.id
    with pytest.raises(openai.NotFoundError):
        await client.containers.files.retrieve(uploaded.id, container_id=made.id)

    await client.containers.files.delete(by_id.id, container_id=made.id)
    with pytest.raises(openai.NotFoundError):
        await client.containers.files.retrieve(by_id.id, container_id=made.id)
    assert len((await client.containers.files.list(made.id)).data) == 2


async def test_containers_are_listed_retrieved_and_deleted(oasis: Harness) -> None:
    client = oasis.sdk()
    _newer_sdk(client)
    made = [await client.containers.create(name=f"box {number}") for number in range(3)]
    page = await client.containers.list(limit=2)
    assert [container.id for container in page.data] == [made[2].id, made[1].id] and page.has_more
    rest = await client.containers.list(limit=2, after=page.data[-1].id)
    assert [container.id for container in rest.data] == [made[0].id]
    assert [container.id for container in (await client.containers.list(name="box 1")).data] == [made[1].id]
    got = await client.containers.retrieve(made[0].id)
    assert got.name == "box 0" and got.expires_after is not None and got.expires_after.minutes == 20
    assert got.memory_limit == "1g"

    await client.containers.delete(made[0].id)
    with pytest.raises(openai.NotFoundError):
        await client.containers.retrieve(made[0].id)
    with pytest.raises(openai.NotFoundError):
        await client.containers.files.list(made[0].id)
    assert [container.id for container in (await client.containers.list()).data] == [made[2].id, made[1].id]

    # another project sees none of them
    _, other_key = await oasis.container.keys.create("other")
    other = oasis.sdk(api_key=other_key)
    with pytest.raises(openai.NotFoundError):
        await other.containers.retrieve(made[1].id)
    assert (await other.containers.list()).data == []


async def test_files_of_one_name_and_files_too_large(start_oasis: Any) -> None:
    harness: Harness = await start_oasis(code_interpreter={"file_mb": 1})
    client = harness.sdk()
    _newer_sdk(client)
    first = await client.files.create(file=("data.csv", b"1"), purpose="user_data")
    second = await client.files.create(file=("data.csv", b"22"), purpose="user_data")
    made = await client.containers.create(name="two", file_ids=[first.id, second.id])
    paths = [file.path for file in (await client.containers.files.list(made.id, order="asc")).data]
    assert paths == ["/mnt/data/data.csv", f"/mnt/data/{second.id}-data.csv"]

    big = await client.files.create(file=("big.bin", b"x" * (1 << 20) + b"x"), purpose="user_data")
    with pytest.raises(openai.BadRequestError) as too_large:
        await client.containers.create(name="big", file_ids=[big.id])
    assert too_large.value.body["param"] == "file_ids"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as upload_too_large:
        await client.containers.files.create(made.id, file=("big.bin", io.BytesIO(b"x" * (1 << 20) + b"x")))
    assert upload_too_large.value.body["param"] == "file"  # type: ignore[index]
    assert len((await client.containers.files.list(made.id)).data) == 2


async def test_an_expired_container_says_so_and_its_files_are_gone(oasis: Harness) -> None:
    client = oasis.sdk()
    _newer_sdk(client)
    made = await client.containers.create(name="short", expires_after={"anchor": "last_active_at", "minutes": 1})
    await client.containers.files.create(made.id, file=("a.txt", io.BytesIO(b"a")))
    async with oasis.container.db.session() as session:
        await session.execute(
            update(CodeContainer).where(CodeContainer.id == made.id).values(last_active_at=made.last_active_at - 61)
        )
        await session.commit()
    assert (await client.containers.retrieve(made.id)).status == "expired"
    with pytest.raises(openai.BadRequestError) as expired:
        await client.containers.files.list(made.id)
    assert expired.value.code == "container_expired"
    with pytest.raises(openai.BadRequestError):
        await client.containers.files.create(made.id, file=("b.txt", io.BytesIO(b"b")))


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 400, "name"),
        ({"name": "x", "memory_limit": "2g"}, 400, "memory_limit"),
        ({"name": "x", "expires_after": {"anchor": "created_at", "minutes": 5}}, 400, "expires_after.anchor"),
        ({"name": "x", "expires_after": {"anchor": "last_active_at", "minutes": 0}}, 400, "expires_after.minutes"),
        ({"name": "x", "file_ids": "file-1"}, 400, "file_ids"),
        ({"name": "x", "file_ids": ["file-missing"]}, 404, "file_ids"),
    ],
)
async def test_bad_containers_are_refused_by_name(
    oasis: Harness, body: dict[str, Any], status: int, param: str
) -> None:
    async with oasis.http() as http:
        response = await http.post("/v1/containers", json=body)
        assert response.status_code == status, response.text
        assert response.json()["error"]["param"] == param
        assert (await http.get("/v1/containers")).json()["data"] == []  # nothing was made


async def test_bad_container_files_are_refused(oasis: Harness) -> None:
    async with oasis.http() as http:
        made = (await http.post("/v1/containers", json={"name": "x"})).json()
        files = f"/v1/containers/{made['id']}/files"
        assert (await http.post(files, json={})).status_code == 400
        assert (await http.post(files, json={"file_id": "file-missing"})).status_code == 404
        assert (await http.post("/v1/containers/cntr_missing/files", json={"file_id": "x"})).status_code == 404
        assert (await http.get(f"{files}/cfile_missing")).status_code == 404
        assert (await http.get(f"{files}/cfile_missing/content")).status_code == 404
        assert (await http.delete(f"{files}/cfile_missing")).status_code == 404
        assert (await http.delete("/v1/containers/cntr_missing")).status_code == 404
