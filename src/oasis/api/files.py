"""Files API: upload, list, retrieve, delete, download content."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile
from starlette.types import Receive, Scope, Send

from oasis.api.deps import ContainerDep, Order, PrincipalDep
from oasis.api.lists import list_body
from oasis.errors import invalid_request
from oasis.protocol import openapi_types as spec
from oasis.protocol.extensions import FileList, FileObject
from oasis.services.files.expiry import file_expiry
from oasis.storage.pagination import PageRequest

router = APIRouter(tags=["Files"])

# OpenAI's exception to the list rules: SDKs before cursor paging read the whole list in one reply.
FILES_MAX_LIMIT = 10_000


@router.post("/files", response_model=FileObject, response_model_exclude_none=True)
async def upload_file(request: Request, container: ContainerDep, principal: PrincipalDep) -> FileObject:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid_request("Upload files as multipart/form-data with the fields `file` and `purpose`.", param="file")
    async with request.form(max_files=1, max_fields=16) as form:
        purpose = form.get("purpose")
        upload = form.get("file")
        if not isinstance(purpose, str) or not purpose:
            raise invalid_request("Missing required parameter: 'purpose'.", param="purpose")
        if not isinstance(upload, UploadFile):
            raise invalid_request("Missing required parameter: 'file' (send it as a file part).", param="file")
        return await container.files.upload(
            principal.project_id,
            purpose=purpose,
            filename=upload.filename or "upload",
            source=upload.file,
            size=upload.size or 0,
            expires_after=file_expiry(form.get("expires_after[anchor]"), form.get("expires_after[seconds]")),
        )


@router.get("/files", response_model=FileList, response_model_exclude_none=True)
async def list_files(
    container: ContainerDep,
    principal: PrincipalDep,
    purpose: str | None = None,
    limit: Annotated[int, Query(ge=1, le=FILES_MAX_LIMIT)] = FILES_MAX_LIMIT,
    order: Order = "desc",
    after: str | None = None,
) -> Any:
    page = await container.files.list(principal.project_id, PageRequest(limit=limit, order=order, after=after), purpose)
    return list_body(page)


@router.get("/files/{file_id}", response_model=FileObject, response_model_exclude_none=True)
async def retrieve_file(file_id: str, container: ContainerDep, principal: PrincipalDep) -> FileObject:
    return await container.files.retrieve(principal.project_id, file_id)


@router.delete("/files/{file_id}", response_model=spec.DeleteFileResponse)
async def delete_file(file_id: str, container: ContainerDep, principal: PrincipalDep) -> spec.DeleteFileResponse:
    deleted = await container.files.delete(principal.project_id, file_id)
    return spec.DeleteFileResponse(id=deleted, object="file", deleted=True)


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body however the response ends: a client that leaves mid-download lets go of the open file or
    S3 connection at once, not whenever the garbage collector finds the suspended generator."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(RuntimeError):  # still running: the error closing it ends it
                    await close()


@router.get("/files/{file_id}/content", response_class=StreamingResponse)
async def download_file(file_id: str, container: ContainerDep, principal: PrincipalDep) -> StreamingResponse:
    content = await container.files.content(principal.project_id, file_id)
    return ClosingStreamingResponse(
        content.chunks,
        media_type=content.content_type,
        headers={
            "content-length": str(content.size),
            "content-disposition": f"attachment; filename*=UTF-8''{quote(content.filename)}",
        },
    )
