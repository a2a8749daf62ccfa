"""Rows of models that belong to a project (fine-tune results)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.clock import now
from oasis.storage.tables import OwnedModel


async def add_model(session: AsyncSession, model: OwnedModel) -> OwnedModel:
    session.add(model)
    await session.flush()
    return model


async def list_models(session: AsyncSession, project_id: str) -> list[OwnedModel]:
    rows = await session.scalars(
        select(OwnedModel)
        .where(OwnedModel.project_id == project_id, OwnedModel.deleted_at.is_(None))
        .order_by(OwnedModel.seq)
    )
    return list(rows.all())


async def get_model(session: AsyncSession, project_id: str, model_id: str) -> OwnedModel | None:
    return await session.scalar(
        select(OwnedModel).where(
            OwnedModel.id == model_id, OwnedModel.project_id == project_id, OwnedModel.deleted_at.is_(None)
        )
    )


async def mark_deleted(session: AsyncSession, model: OwnedModel) -> None:
    model.deleted_at = now()
    await session.flush()
