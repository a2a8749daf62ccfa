"""The project's API keys over HTTP, in the shapes of OpenAI's Admin API (`/v1/organization/projects/...`), for
the dashboard and scripts: a key lists its own project, and lists, creates (an oasis extension: OpenAI makes keys
in its web console) and revokes that project's keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from oasis.api.deps import ContainerDep, PrincipalDep

router = APIRouter(tags=["Projects"])


def _page(data: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": False,
    }


@router.get("/organization/projects")
async def list_projects(container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return _page([await container.project_keys.own_project(principal)])


@router.get("/organization/projects/{project_id}/api_keys")
async def list_project_keys(project_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return _page(await container.project_keys.list(principal, project_id))


@router.post("/organization/projects/{project_id}/api_keys")
async def create_project_key(project_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.project_keys.create(principal, project_id)


@router.delete("/organization/projects/{project_id}/api_keys/{key_id}")
async def revoke_project_key(
    project_id: str, key_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.project_keys.revoke(principal, project_id, key_id)
