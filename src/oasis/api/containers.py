"""The Containers API (`client.containers`): containers of the code_interpreter tool, and the files in them.

(`container` below is the application's service container, as in every route; the API's containers are named by
`container_id`.)"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile

from oasis.api.deps import ContainerDep, PageDep, PrincipalDep
from oasis.api.files import ClosingStreamingResponse
from oasis.api.lists import dict_list_body
from oasis.errors import invalid_request

router = APIRouter(tags=["Containers"])


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise invalid_request("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise invalid_request("The request body is a JSON object.")
    return body


@router.post("/containers")
async def create_container(request: Request, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    body = await _json_body(request)
    return await container.containers.create(
        principal.project_id,
        body.get("name"),
        body.get("file_ids"),
        body.get("expires_after"),
        body.get("memory_limit"),
    )


@router.get("/containers")
async def list_containers(
    container: ContainerDep, principal: PrincipalDep, page: PageDep, name: str | None = None
) -> dict[str, Any]:
    return dict_list_body(await container.containers.list_containers(principal.project_id, page, name))


@router.get("/containers/{container_id}")
async def retrieve_container(container_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.containers.retrieve(principal.project_id, container_id)


@router.delete("/containers/{container_id}")
async def delete_container(container_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.containers.delete(principal.project_id, container_id)


@router.post("/containers/{container_id}/files")
async def create_container_file(
    container_id: str, request: Request, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    """A file sent as multipart `file`, or a copy of the project's file `file_id` (JSON or a form field)."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if isinstance(upload, UploadFile):
                return await container.containers.upload_file(
                    principal.project_id, container_id, upload.filename or "upload", upload.file
                )
            file_id = form.get("file_id")
    else:
        file_id = (await _json_body(request)).get("file_id")
    return await container.containers.add_project_file(principal.project_id, container_id, file_id)


@router.get("/containers/{container_id}/files")
async def list_container_files(
    container_id: str, container: ContainerDep, principal: PrincipalDep, page: PageDep
) -> dict[str, Any]:
    return dict_list_body(await container.containers.list_files(principal.project_id, container_id, page))


@router.get("/containers/{container_id}/files/{file_id}")
async def retrieve_container_file(
    container_id: str, file_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.containers.retrieve_file(principal.project_id, container_id, file_id)


@router.get("/containers/{container_id}/files/{file_id}/content", response_class=StreamingResponse)
async def container_file_content(
    container_id: str, file_id: str, container: ContainerDep, principal: PrincipalDep
) -> StreamingResponse:
    row, chunks = await container.containers.file_content(principal.project_id, container_id, file_id)
    filename = row.path.rsplit("/", 1)[-1]
    return ClosingStreamingResponse(
        chunks,
        media_type="application/octet-stream",
        headers={
            "content-length": str(row.bytes),
            "content-disposition": f"attachment; filename*=UTF-8''{quote(filename)}",
        },
    )


@router.delete("/containers/{container_id}/files/{file_id}")
async def delete_container_file(
    container_id: str, file_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.containers.delete_file(principal.project_id, container_id, file_id)
