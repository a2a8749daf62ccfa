"""Assistants: create, list, retrieve, modify, delete. Deleting one leaves its threads (and their runs) usable."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from oasis.engines.registry import EngineRegistry
from oasis.errors import OasisError, not_found
from oasis.protocol.assistants import CreateAssistantRequest, ModifyAssistantRequest
from oasis.services.assistants.resources import response_format_to_store, tool_resources_to_store, tools_to_store
from oasis.services.assistants.wire import assistant_to_wire
from oasis.services.metadata import check_metadata
from oasis.services.models.engine_lookup import check_known, unknown_in_body
from oasis.services.vector_stores.service import VectorStoreService
from oasis.storage import assistants as rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database, Session
from oasis.storage.pagination import Page, PageRequest
from oasis.storage.tables import Assistant

# Makes a model name servable for a project where it is one of its fine-tunes (loaded on first use).
ModelLoader = Callable[[str, str], Awaitable[None]]


async def load_named(load_model: ModelLoader, project_id: str, model: str) -> None:
    """Loads the fine-tune an assistant or a run names; one that is not found (or was just deleted) is answered as
    any unknown model there (400)."""
    try:
        await load_model(project_id, model)
    except OasisError as exc:
        if exc.code != "model_not_found":
            raise
        raise unknown_in_body(model) from None


async def _no_loading(project_id: str, model: str) -> None:
    return None


class AssistantService:
    def __init__(
        self,
        db: Database,
        registry: EngineRegistry,
        vector_stores: VectorStoreService,
        load_model: ModelLoader = _no_loading,
    ) -> None:
        self._db = db
        self._registry = registry
        self._vector_stores = vector_stores
        self._load_model = load_model

    async def create(self, project_id: str, request: CreateAssistantRequest) -> dict[str, Any]:
        await load_named(self._load_model, project_id, request.model)
        check_known(self._registry, request.model, in_body=True)
        tools = tools_to_store(request.tools)
        metadata = check_metadata(request.metadata)
        response_format = response_format_to_store(request.response_format)
        async with self._db.session() as session:
            resources = await tool_resources_to_store(
                session, project_id, request.tool_resources, self._vector_stores, helper_expiry_days=None
            )
            row = Assistant(
                id=new_id("asst_"),
                project_id=project_id,
                created_at=now(),
                name=request.name,
                description=request.description,
                model=request.model,
                instructions=request.instructions,
                tools_json=json.dumps(tools),
                tool_resources_json=json.dumps(resources),
                metadata_json=json.dumps(metadata),
                temperature=1.0 if request.temperature is None else request.temperature,
                top_p=1.0 if request.top_p is None else request.top_p,
                response_format_json=json.dumps(response_format),
                reasoning_effort=request.reasoning_effort,
            )
            session.add(row)
            await session.commit()
        self._vector_stores.wake()  # files of a `vector_stores` helper
        return assistant_to_wire(row)

    async def retrieve(self, project_id: str, assistant_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            return assistant_to_wire(await self.row(session, project_id, assistant_id))

    async def list_assistants(self, project_id: str, page: PageRequest) -> Page[dict[str, Any]]:
        async with self._db.session() as session:
            found = await rows.list_assistants(session, project_id, page)
        return Page(items=[assistant_to_wire(row) for row in found.items], has_more=found.has_more)

    async def modify(self, project_id: str, assistant_id: str, request: ModifyAssistantRequest) -> dict[str, Any]:
        given = request.model_fields_set
        if request.model is not None:
            await load_named(self._load_model, project_id, request.model)
            check_known(self._registry, request.model, in_body=True)
        async with self._db.session() as session:
            row = await self.row(session, project_id, assistant_id)
            if request.model is not None:
                row.model = request.model
            for field in ("name", "description", "instructions"):
                if field in given:
                    setattr(row, field, getattr(request, field))
            if request.tools is not None:
                row.tools_json = json.dumps(tools_to_store(request.tools))
            if request.tool_resources is not None:
                resources = await tool_resources_to_store(
                    session, project_id, request.tool_resources, self._vector_stores, helper_expiry_days=None
                )
                row.tool_resources_json = json.dumps(resources)
            if request.metadata is not None:
                row.metadata_json = json.dumps(check_metadata(request.metadata))
            if "temperature" in given:
                row.temperature = 1.0 if request.temperature is None else request.temperature
            if "top_p" in given:
                row.top_p = 1.0 if request.top_p is None else request.top_p
            if "response_format" in given:
                row.response_format_json = json.dumps(response_format_to_store(request.response_format))
            if "reasoning_effort" in given:
                row.reasoning_effort = request.reasoning_effort
            await session.commit()
        self._vector_stores.wake()  # files of a `vector_stores` helper
        return assistant_to_wire(row)

    async def delete(self, project_id: str, assistant_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            row = await self.row(session, project_id, assistant_id)
            row.deleted_at = now()
            await session.commit()
        return {"id": assistant_id, "object": "assistant.deleted", "deleted": True}

    @staticmethod
    async def row(session: Session, project_id: str, assistant_id: str) -> Assistant:
        row = await rows.get_assistant(session, project_id, assistant_id)
        if row is None:
            raise not_found(f"No assistant found with id '{assistant_id}'.", param="assistant_id")
        return row
