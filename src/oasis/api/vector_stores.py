"""Vector stores: stores, their files, file batches, and search."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from oasis.api.deps import ContainerDep, PageDep, PrincipalDep
from oasis.api.lists import dict_list_body
from oasis.errors import invalid_request
from oasis.protocol.extensions import (
    CreateVectorStoreFileBatchRequest,
    CreateVectorStoreFileRequest,
    CreateVectorStoreRequest,
    UpdateVectorStoreFileRequest,
    UpdateVectorStoreRequest,
    VectorStoreSearchRequest,
)
from oasis.services.vector_stores import filters as vector_filters
from oasis.services.vector_stores.service import BatchFile

router = APIRouter(tags=["Vector stores"])


def _dump(model: Any) -> dict[str, Any] | None:
    return None if model is None else dict(model.model_dump(exclude_none=True))


@router.post("/vector_stores")
async def create_vector_store(
    body: CreateVectorStoreRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.vector_stores.create(
        principal.project_id,
        name=body.name,
        file_ids=body.file_ids or [],
        expires_after_days=body.expires_after.days if body.expires_after else None,
        metadata=body.metadata,
        chunking=_dump(body.chunking_strategy),
    )


@router.get("/vector_stores")
async def list_vector_stores(container: ContainerDep, principal: PrincipalDep, page: PageDep) -> dict[str, Any]:
    return dict_list_body(await container.vector_stores.list_stores(principal.project_id, page))


@router.get("/vector_stores/{vector_store_id}")
async def retrieve_vector_store(vector_store_id: str, container: ContainerDep, principal: PrincipalDep) -> Any:
    return await container.vector_stores.retrieve(principal.project_id, vector_store_id)


@router.post("/vector_stores/{vector_store_id}")
async def modify_vector_store(
    vector_store_id: str, body: UpdateVectorStoreRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.vector_stores.modify(
        principal.project_id,
        vector_store_id,
        name=body.name,
        expires_after_days=body.expires_after.days if body.expires_after else None,
        clear_expiry="expires_after" in body.model_fields_set and body.expires_after is None,
        metadata=body.metadata,
    )


@router.delete("/vector_stores/{vector_store_id}")
async def delete_vector_store(vector_store_id: str, container: ContainerDep, principal: PrincipalDep) -> Any:
    deleted = await container.vector_stores.delete(principal.project_id, vector_store_id)
    return {"id": deleted, "object": "vector_store.deleted", "deleted": True}


@router.post("/vector_stores/{vector_store_id}/files")
async def create_vector_store_file(
    vector_store_id: str, body: CreateVectorStoreFileRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.vector_stores.add_file(
        principal.project_id,
        vector_store_id,
        body.file_id,
        chunking=_dump(body.chunking_strategy),
        attributes=body.attributes,
    )


@router.get("/vector_stores/{vector_store_id}/files")
async def list_vector_store_files(
    vector_store_id: str,
    container: ContainerDep,
    principal: PrincipalDep,
    page: PageDep,
    filter: str | None = None,
) -> dict[str, Any]:
    found = await container.vector_stores.list_files(principal.project_id, vector_store_id, page, filter)
    return dict_list_body(found)


@router.get("/vector_stores/{vector_store_id}/files/{file_id}")
async def retrieve_vector_store_file(
    vector_store_id: str, file_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.vector_stores.retrieve_file(principal.project_id, vector_store_id, file_id)


@router.get("/vector_stores/{vector_store_id}/files/{file_id}/content")
async def retrieve_vector_store_file_content(
    vector_store_id: str, file_id: str, container: ContainerDep, principal: PrincipalDep, page: str | None = None
) -> dict[str, Any]:
    return await container.vector_stores.file_content(principal.project_id, vector_store_id, file_id, page)


@router.post("/vector_stores/{vector_store_id}/files/{file_id}")
async def update_vector_store_file(
    vector_store_id: str,
    file_id: str,
    body: UpdateVectorStoreFileRequest,
    container: ContainerDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    return await container.vector_stores.update_file(principal.project_id, vector_store_id, file_id, body.attributes)


@router.delete("/vector_stores/{vector_store_id}/files/{file_id}")
async def delete_vector_store_file(
    vector_store_id: str, file_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    deleted = await container.vector_stores.delete_file(principal.project_id, vector_store_id, file_id)
    return {"id": deleted, "object": "vector_store.file.deleted", "deleted": True}


@router.post("/vector_stores/{vector_store_id}/file_batches")
async def create_vector_store_file_batch(
    vector_store_id: str, body: CreateVectorStoreFileBatchRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    if body.files is not None:
        entries = [
            BatchFile(file.file_id, _dump(file.chunking_strategy), file.attributes, f"files[{index}]")
            for index, file in enumerate(body.files)
        ]
    else:
        chunking = _dump(body.chunking_strategy)
        entries = [BatchFile(file_id, chunking, body.attributes) for file_id in body.file_ids or []]
    return await container.vector_stores.create_batch(principal.project_id, vector_store_id, entries)


@router.get("/vector_stores/{vector_store_id}/file_batches/{batch_id}")
async def retrieve_vector_store_file_batch(
    vector_store_id: str, batch_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.vector_stores.retrieve_batch(principal.project_id, vector_store_id, batch_id)


@router.post("/vector_stores/{vector_store_id}/file_batches/{batch_id}/cancel")
async def cancel_vector_store_file_batch(
    vector_store_id: str, batch_id: str, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    return await container.vector_stores.cancel_batch(principal.project_id, vector_store_id, batch_id)


@router.get("/vector_stores/{vector_store_id}/file_batches/{batch_id}/files")
async def list_files_in_vector_store_batch(
    vector_store_id: str,
    batch_id: str,
    container: ContainerDep,
    principal: PrincipalDep,
    page: PageDep,
    filter: str | None = None,
) -> dict[str, Any]:
    found = await container.vector_stores.list_files(principal.project_id, vector_store_id, page, filter, batch_id)
    return dict_list_body(found)


@router.post("/vector_stores/{vector_store_id}/search")
async def search_vector_store(
    vector_store_id: str, body: VectorStoreSearchRequest, container: ContainerDep, principal: PrincipalDep
) -> dict[str, Any]:
    queries = [body.query] if isinstance(body.query, str) else body.query
    if not queries or not all(query.strip() for query in queries):
        raise invalid_request("'query' must hold non-empty text.", param="query")
    if body.filters is not None:
        vector_filters.check(body.filters)
    hits = await container.search.search(
        principal.project_id,
        vector_store_id,
        queries,
        max_results=body.max_num_results,
        filters=body.filters,
        score_threshold=body.ranking_options.score_threshold if body.ranking_options else 0.0,
    )
    return {
        "object": "vector_store.search_results.page",
        "search_query": queries,
        "data": [
            {
                "file_id": hit.file_id,
                "filename": hit.filename,
                "score": hit.score,
                "attributes": hit.attributes,
                "content": [{"type": "text", "text": hit.text}],
            }
            for hit in hits
        ],
        "has_more": False,
        "next_page": None,
    }
