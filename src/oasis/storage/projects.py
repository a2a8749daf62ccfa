"""Projects and their API keys."""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.clock import new_id, now
from oasis.storage.tables import ApiKey, Project


async def get_or_create_project(session: AsyncSession, name: str) -> Project:
    project = await session.scalar(select(Project).where(Project.name == name))
    if project is not None:
        return project
    project = Project(id=new_id("proj_"), name=name, created_at=now())
    try:
        async with session.begin_nested():
            session.add(project)
    except IntegrityError:
        # Another process made it between our read and our insert.
        project = (await session.scalars(select(Project).where(Project.name == name))).one()
    return project


async def add_key(
    session: AsyncSession, project_id: str, key_hash: str, redacted: str, *, manages_keys: bool = False
) -> ApiKey:
    key = ApiKey(
        id=new_id("key_"),
        project_id=project_id,
        key_hash=key_hash,
        redacted=redacted,
        created_at=now(),
        manages_keys=manages_keys,
    )
    session.add(key)
    await session.flush()
    return key


async def find_key(session: AsyncSession, key_hash: str) -> ApiKey | None:
    return await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))


async def lookup_key(session: AsyncSession, key_hash: str | None) -> tuple[str | None, str | None, bool]:
    """(project id, key id) of a live key with this hash, or Nones; and whether any key exists at all."""
    live = select(ApiKey.project_id, ApiKey.id).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    row = (
        await session.execute(
            select(
                live.with_only_columns(ApiKey.project_id).scalar_subquery(),
                live.with_only_columns(ApiKey.id).scalar_subquery(),
                exists().where(ApiKey.id.is_not(None)),
            )
        )
    ).one()
    return row[0], row[1], bool(row[2])


# The same question as lookup_key, for Database.sqlite_point_read on the hot path.
LOOKUP_KEY_SQL = (
    "SELECT (SELECT project_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL),"
    " (SELECT id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL),"
    " EXISTS (SELECT 1 FROM api_keys)"
)


async def any_key_exists(session: AsyncSession) -> bool:
    return bool(await session.scalar(select(exists().where(ApiKey.id.is_not(None)))))


async def list_keys(session: AsyncSession) -> list[tuple[ApiKey, Project]]:
    rows = await session.execute(
        select(ApiKey, Project).join(Project, Project.id == ApiKey.project_id).order_by(ApiKey.created_at)
    )
    return [(key, project) for key, project in rows.all()]


async def get_key(session: AsyncSession, key_id: str) -> tuple[ApiKey, Project] | None:
    row = await session.execute(
        select(ApiKey, Project).join(Project, Project.id == ApiKey.project_id).where(ApiKey.id == key_id)
    )
    found = row.first()
    return None if found is None else (found[0], found[1])


async def project_ids(session: AsyncSession, names: list[str]) -> dict[str, str]:
    """Project id by name, for the names that exist."""
    found = await session.execute(select(Project.name, Project.id).where(Project.name.in_(names)))
    return {row[0]: row[1] for row in found}


async def live_keys(session: AsyncSession, project_id: str) -> list[ApiKey]:
    """The project's keys that have not been revoked, oldest first."""
    rows = await session.scalars(
        select(ApiKey)
        .where(ApiKey.project_id == project_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    return list(rows)
