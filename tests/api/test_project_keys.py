"""A project's API keys over HTTP (`/v1/organization/projects/...`, OpenAI's Admin API shapes): a key sees its own
project only, and lists, creates and revokes that project's keys; the secret is shown once."""

from __future__ import annotations

import openai

from tests.conftest import Harness


async def test_a_server_without_keys_cannot_manage_keys_over_http(oasis: Harness) -> None:
    async with oasis.http() as http:
        response = await http.get("/v1/organization/projects")
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "insufficient_permissions" and "oasis keys create" in error["message"]


async def test_a_key_manages_its_own_projects_keys(oasis: Harness) -> None:
    _, alpha_key = await oasis.container.keys.create("alpha", manages_keys=True)
    beta_info, beta_key = await oasis.container.keys.create("beta", manages_keys=True)
    async with oasis.http(api_key=beta_key) as http:
        beta_project = (await http.get("/v1/organization/projects")).json()["data"][0]["id"]
    async with oasis.http(api_key=alpha_key) as http:
        projects = (await http.get("/v1/organization/projects")).json()
        assert [project["name"] for project in projects["data"]] == ["alpha"]
        project = projects["data"][0]
        assert project["object"] == "organization.project" and project["status"] == "active"
        keys_path = f"/v1/organization/projects/{project['id']}/api_keys"

        listed = (await http.get(keys_path)).json()
        assert len(listed["data"]) == 1 and alpha_key not in str(listed)
        assert listed["data"][0]["redacted_value"].endswith(alpha_key[-4:])

        created = (await http.post(keys_path)).json()
        assert created["object"] == "organization.project.api_key" and created["value"].startswith("sk-oasis-")
        assert {key["id"] for key in (await http.get(keys_path)).json()["data"]} == {
            listed["data"][0]["id"],
            created["id"],
        }  # keys made in the same second have no order between them
        again = (await http.get(keys_path)).json()["data"]
        assert created["value"] not in str(again) and all("value" not in key for key in again)  # shown once

        # the new key acts for the same project, and is a plain key: it cannot make keys in turn
        uploaded = await oasis.sdk(created["value"]).files.create(file=("a.txt", b"hello"), purpose="assistants")
        assert (await oasis.sdk(alpha_key).files.retrieve(uploaded.id)).id == uploaded.id
        async with oasis.http(api_key=created["value"]) as plain:
            assert (await plain.get("/v1/organization/projects")).status_code == 200  # its own project: fine
            refused = await plain.post(keys_path)
            assert refused.status_code == 403 and "--manage-keys" in refused.json()["error"]["message"]
            assert (await plain.get(keys_path)).status_code == 403

        other = await http.get(f"/v1/organization/projects/{beta_project}/api_keys")
        assert other.status_code == 404
        foreign = await http.delete(f"{keys_path}/{beta_info.id}")
        assert foreign.status_code == 404 and foreign.json()["error"]["param"] == "key_id"

        revoked = await http.delete(f"{keys_path}/{created['id']}")
        assert revoked.json() == {
            "object": "organization.project.api_key.deleted",
            "id": created["id"],
            "deleted": True,
        }
        assert (await http.delete(f"{keys_path}/{created['id']}")).status_code == 404
        assert [key["id"] for key in (await http.get(keys_path)).json()["data"]] == [listed["data"][0]["id"]]
    try:
        await oasis.sdk(created["value"]).models.list()
    except openai.AuthenticationError:
        pass
    else:
        raise AssertionError("a revoked key still works")
