"""The Models API: configured models and their aliases, plus models a project owns (fine-tunes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from oasis.engines.registry import EngineRegistry
from oasis.errors import not_found, permission_denied
from oasis.protocol import openapi_types as spec
from oasis.services.models.engine_lookup import check_not_failed
from oasis.storage import fine_tuning as job_rows
from oasis.storage import models as model_rows
from oasis.storage.db import Database


def _model_not_found(model: str) -> Exception:
    return not_found(
        f"The model '{model}' does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


class ModelService:
    def __init__(
        self,
        db: Database,
        registry: EngineRegistry,
        started_at: int,
        on_deleted: Callable[[str, str | None, str | None], Awaitable[None]] | None = None,
    ) -> None:
        self._db = db
        self._registry = registry
        # (model, its artifact's blob key, its base model): unloads a deleted fine-tune and removes its files
        self._on_deleted = on_deleted
        # Configured models have no creation date of their own; the server's start is the honest answer.
        self._started_at = started_at

    def _configured(self) -> list[spec.Model]:
        """The configured models and aliases, but those that failed to load (they answer 503 `model_failed`
        with the reason, and /health shows it): the list says what can be used."""
        return [
            spec.Model(id=name, object="model", created=self._started_at, owned_by=model_spec.owned_by)
            for model_spec in self._registry.specs
            if not self._failed(model_spec.id)
            for name in (model_spec.id, *model_spec.aliases)
        ]

    def _failed(self, model_id: str) -> bool:
        state = self._registry.state(model_id)
        return state is not None and state.status == "failed"

    async def list(self, project_id: str) -> list[spec.Model]:
        async with self._db.session() as session:
            owned = await model_rows.list_models(session, project_id)
        return self._configured() + [
            spec.Model(id=row.id, object="model", created=row.created_at, owned_by=row.owned_by) for row in owned
        ]

    async def retrieve(self, project_id: str, model: str) -> spec.Model:
        model_spec = self._registry.resolve(model) if self._registry.configured(model) else None
        if model_spec is not None:
            # The list leaves a failed model out; retrieving it says why, as using it would.
            check_not_failed(self._registry, model)
            return spec.Model(id=model, object="model", created=self._started_at, owned_by=model_spec.owned_by)
        async with self._db.session() as session:
            row = await model_rows.get_model(session, project_id, model)
            # A fine-tune's checkpoint answers chat under its own name, so it is a model a client may look up.
            checkpoint = await job_rows.checkpoint_model(session, project_id, model) if row is None else None
        if row is not None:
            return spec.Model(id=row.id, object="model", created=row.created_at, owned_by=row.owned_by)
        if checkpoint is not None:
            return spec.Model(id=model, object="model", created=checkpoint.created_at, owned_by=project_id)
        raise _model_not_found(model)

    async def delete(self, project_id: str, model: str) -> spec.DeleteModelResponse:
        if self._registry.configured(model):
            raise permission_denied(
                f"The model '{model}' is served from this server's configuration and cannot be deleted "
                "through the API; only models your project owns (fine-tunes) can.",
                param="model",
                code="model_not_deletable",
            )
        async with self._db.session() as session:
            row = await model_rows.get_model(session, project_id, model)
            if row is None:
                raise _model_not_found(model)
            await model_rows.mark_deleted(session, row)
            await session.commit()
        if self._on_deleted is not None:
            await self._on_deleted(model, row.artifact_blob_key, row.base_model)
        return spec.DeleteModelResponse(id=model, object="model", deleted=True)
