"""Rows of containers (the Containers API) and of the files in them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.storage.pagination import Page, PageRequest, paginate
from oasis.storage.tables import CodeContainer, ContainerFile


async def get_container(session: AsyncSession, project_id: str, container_id: str) -> CodeContainer | None:
    return await session.scalar(
        select(CodeContainer).where(
            CodeContainer.id == container_id,
            CodeContainer.project_id == project_id,
            CodeContainer.deleted_at.is_(None),
        )
    )


async def list_containers(
    session: AsyncSession, project_id: str, page: PageRequest, name: str | None = None
) -> Page[CodeContainer]:
    filters = [CodeContainer.name == name] if name is not None else []
    return await paginate(
        session, CodeContainer, scope=[CodeContainer.project_id == project_id], filters=filters, page=page
    )


async def ever_made(session: AsyncSession, container_id: str) -> bool:
    """Whether a container of this id was ever made (deleted since or not)."""
    return await session.scalar(select(CodeContainer.seq).where(CodeContainer.id == container_id)) is not None


async def touch(session: AsyncSession, container_id: str, stamp: int) -> None:
    await session.execute(update(CodeContainer).where(CodeContainer.id == container_id).values(last_active_at=stamp))


async def live_files(session: AsyncSession, container_id: str) -> list[ContainerFile]:
    """The container's files, oldest first."""
    found = await session.scalars(
        select(ContainerFile)
        .where(ContainerFile.container_id == container_id, ContainerFile.deleted_at.is_(None))
        .order_by(ContainerFile.seq)
    )
    return list(found)


async def list_files(session: AsyncSession, container_id: str, page: PageRequest) -> Page[ContainerFile]:
    return await paginate(session, ContainerFile, scope=[ContainerFile.container_id == container_id], page=page)


async def get_file(session: AsyncSession, container_id: str, file_id: str) -> ContainerFile | None:
    return await session.scalar(
        select(ContainerFile).where(
            ContainerFile.id == file_id,
            ContainerFile.container_id == container_id,
            ContainerFile.deleted_at.is_(None),
        )
    )


async def delete_files_at(session: AsyncSession, container_id: str, paths: Sequence[str], stamp: int) -> None:
    """Marks the container's files at `paths` deleted (a file written again there replaces them)."""
    if paths:
        await session.execute(
            update(ContainerFile)
            .where(
                ContainerFile.container_id == container_id,
                ContainerFile.path.in_(list(paths)),
                ContainerFile.deleted_at.is_(None),
            )
            .values(deleted_at=stamp)
        )


async def delete_all_files(session: AsyncSession, container_id: str, stamp: int) -> None:
    await session.execute(
        update(ContainerFile)
        .where(ContainerFile.container_id == container_id, ContainerFile.deleted_at.is_(None))
        .values(deleted_at=stamp)
    )


async def referenced_keys(session: AsyncSession, keys: list[str], stamp: int) -> set[str]:
    """Which of `keys` a live file of a live, unexpired container points to."""
    found = await session.scalars(
        select(ContainerFile.blob_key)
        .join(CodeContainer, CodeContainer.id == ContainerFile.container_id)
        .where(
            ContainerFile.blob_key.in_(keys),
            ContainerFile.deleted_at.is_(None),
            CodeContainer.deleted_at.is_(None),
            CodeContainer.last_active_at + CodeContainer.expires_minutes * 60 >= stamp,
        )
    )
    return set(found)
