"""Models API: list, retrieve, delete."""

from __future__ import annotations

from fastapi import APIRouter

from oasis.api.deps import ContainerDep, PrincipalDep
from oasis.protocol import openapi_types as spec
from oasis.protocol.extensions import ModelList

router = APIRouter(tags=["Models"])


@router.get("/models", response_model=ModelList)
async def list_models(container: ContainerDep, principal: PrincipalDep) -> ModelList:
    return ModelList(object="list", data=await container.models.list(principal.project_id))


@router.get("/models/{model:path}", response_model=spec.Model)
async def retrieve_model(model: str, container: ContainerDep, principal: PrincipalDep) -> spec.Model:
    return await container.models.retrieve(principal.project_id, model)


@router.delete("/models/{model:path}", response_model=spec.DeleteModelResponse)
async def delete_model(model: str, container: ContainerDep, principal: PrincipalDep) -> spec.DeleteModelResponse:
    return await container.models.delete(principal.project_id, model)
