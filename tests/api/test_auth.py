"""API keys and projects: the open loopback mode, 401s, revocation, and isolation between projects."""

from __future__ import annotations

import io

import openai
import pytest

from tests.conftest import Harness


async def test_without_keys_any_bearer_works_on_loopback(oasis: Harness) -> None:
    assert (await oasis.sdk("anything-at-all").models.list()).data == []
    async with oasis.http(api_key=None) as http:
        assert (await http.get("/v1/models")).status_code == 200


async def test_without_keys_other_addresses_are_refused(oasis: Harness) -> None:
    async with oasis.http(client=("192.0.2.7", 5000)) as http:
        response = await http.get("/v1/models")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_allow_unauthenticated_opens_other_addresses(start_oasis) -> None:  # type: ignore[no-untyped-def]
    harness: Harness = await start_oasis(server={"allow_unauthenticated": True})
    async with harness.http(client=("192.0.2.7", 5000)) as http:
        assert (await http.get("/v1/models")).status_code == 200


async def test_once_a_key_exists_only_live_keys_pass(oasis: Harness) -> None:
    info, key = await oasis.container.keys.create("alpha")
    assert key.startswith("sk-oasis-")
    assert (await oasis.sdk(key).models.list()).object == "list"

    with pytest.raises(openai.AuthenticationError) as wrong:
        await oasis.sdk("sk-oasis-wrong").models.list()
    assert wrong.value.status_code == 401
    assert wrong.value.code == "invalid_api_key"
    assert "sk-oasis-wrong" not in wrong.value.message  # keys are echoed redacted only

    async with oasis.http(api_key=None) as http:
        missing = await http.get("/v1/files")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"

    await oasis.container.keys.revoke(info.id)
    with pytest.raises(openai.AuthenticationError):
        await oasis.sdk(key).models.list()


async def test_revoking_every_key_does_not_reopen_the_server(oasis: Harness) -> None:
    info, _ = await oasis.container.keys.create("alpha")
    await oasis.container.keys.revoke(info.id)
    with pytest.raises(openai.AuthenticationError):
        await oasis.sdk("anything").models.list()


async def test_health_needs_no_key(oasis: Harness) -> None:
    await oasis.container.keys.create("alpha")
    async with oasis.http(api_key=None) as http:
        assert (await http.get("/health")).status_code == 200


async def test_projects_cannot_see_each_others_files(oasis: Harness) -> None:
    _, key_a = await oasis.container.keys.create("alpha")
    _, key_b = await oasis.container.keys.create("beta")
    alice, bob = oasis.sdk(key_a), oasis.sdk(key_b)
    secret = await alice.files.create(file=("secret.txt", io.BytesIO(b"alpha only")), purpose="assistants")

    for call in (
        lambda: bob.files.retrieve(secret.id),
        lambda: bob.files.content(secret.id),
        lambda: bob.files.delete(secret.id),
    ):
        with pytest.raises(openai.NotFoundError):
            await call()
    assert [f.id async for f in bob.files.list()] == []
    with pytest.raises(openai.BadRequestError):
        await bob.files.list(extra_query={"after": secret.id})  # a foreign id is no cursor either
    assert (await alice.files.content(secret.id)).content == b"alpha only"


async def test_open_mode_data_belongs_to_the_default_project(oasis: Harness) -> None:
    before = await oasis.sdk("anything").files.create(file=("a.txt", b"a"), purpose="assistants")
    _, key = await oasis.container.keys.create("default")
    assert (await oasis.sdk(key).files.retrieve(before.id)).id == before.id
