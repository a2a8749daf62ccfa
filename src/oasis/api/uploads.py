"""Uploads API (after the 2.0.0 spec): a file sent in parts, then completed into a File."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from oasis.api.deps import ContainerDep, PrincipalDep
from oasis.errors import invalid_request

router = APIRouter(tags=["Uploads"])


@router.post("/uploads")
async def create_upload(body: dict[str, Any], container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.uploads.create(principal.project_id, body)


@router.post("/uploads/{upload_id}/parts")
async def add_upload_part(
    upload_id: str, request: Request, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid_request("Send a part as multipart/form-data with the field `data`.", param="data")
    async with request.form(max_files=1, max_fields=4) as form:
        data = form.get("data")
        if not isinstance(data, UploadFile):
            raise invalid_request("Missing required parameter: 'data' (send it as a file part).", param="data")
        return await container.uploads.add_part(principal.project_id, upload_id, data.file, data.size or 0)


@router.post("/uploads/{upload_id}/complete")
async def complete_upload(
    upload_id: str, body: dict[str, Any], container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    if "part_ids" not in body:
        raise invalid_request("Missing required parameter: 'part_ids'.", param="part_ids")
    return await container.uploads.complete(principal.project_id, upload_id, body["part_ids"], body.get("md5"))


@router.post("/uploads/{upload_id}/cancel")
async def cancel_upload(upload_id: str, container: ContainerDep, principal: PrincipalDep) -> dict[str, Any]:
    return await container.uploads.cancel(principal.project_id, upload_id)
