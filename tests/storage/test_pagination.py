"""The one pagination helper: limit, order, after, before, has_more, same-second ties, tombstoned cursors."""

from __future__ import annotations

import pytest

from oasis.errors import OasisError
from oasis.storage import files as file_rows
from oasis.storage.pagination import PageRequest, paginate
from oasis.storage.projects import get_or_create_project
from oasis.storage.tables import StoredFile
from tests.conftest import Harness

SAME_SECOND = 1_750_000_000


@pytest.fixture
async def seven(oasis: Harness) -> tuple[Harness, str, list[str]]:
    """Seven files created in the same second, in a known order, plus one in another project."""
    async with oasis.container.db.session() as session:
        project = await get_or_create_project(session, "p")
        other = await get_or_create_project(session, "other")
        ids = []
        for n in range(7):
            row = StoredFile(
                id=f"file-{n}",
                project_id=project.id,
                filename=f"{n}",
                purpose="assistants",
                bytes=1,
                created_at=SAME_SECOND,
                status="processed",
                blob_key=f"files/file-{n}",
            )
            session.add(row)
            await session.flush()
            ids.append(row.id)
        session.add(
            StoredFile(
                id="file-foreign",
                project_id=other.id,
                filename="x",
                purpose="assistants",
                bytes=1,
                created_at=SAME_SECOND,
                status="processed",
                blob_key="files/file-foreign",
            )
        )
        await session.commit()
    return oasis, project.id, ids


async def _page(harness: Harness, project_id: str, **request: object) -> tuple[list[str], bool]:
    async with harness.container.db.session() as session:
        page = await paginate(
            session,
            StoredFile,
            scope=[StoredFile.project_id == project_id],
            page=PageRequest(**request),  # type: ignore[arg-type]
        )
    return [row.id for row in page.items], page.has_more


async def test_same_second_objects_keep_creation_order(seven: tuple[Harness, str, list[str]]) -> None:
    harness, project, ids = seven
    assert await _page(harness, project, limit=100, order="asc") == (ids, False)
    assert await _page(harness, project, limit=100, order="desc") == (ids[::-1], False)


async def test_after_walks_forward_in_both_orders(seven: tuple[Harness, str, list[str]]) -> None:
    harness, project, ids = seven
    assert await _page(harness, project, limit=3, order="asc") == (ids[:3], True)
    assert await _page(harness, project, limit=3, order="asc", after=ids[2]) == (ids[3:6], True)
    assert await _page(harness, project, limit=3, order="asc", after=ids[5]) == (ids[6:], False)
    assert await _page(harness, project, limit=3, order="desc", after=ids[4]) == (
        [ids[3], ids[2], ids[1]],
        True,
    )
    assert await _page(harness, project, limit=3, order="desc", after=ids[0]) == ([], False)


async def test_before_walks_back_and_keeps_the_order(seven: tuple[Harness, str, list[str]]) -> None:
    harness, project, ids = seven
    assert await _page(harness, project, limit=2, order="asc", before=ids[5]) == ([ids[3], ids[4]], True)
    assert await _page(harness, project, limit=5, order="asc", before=ids[2]) == ([ids[0], ids[1]], False)
    assert await _page(harness, project, limit=2, order="desc", before=ids[1]) == ([ids[3], ids[2]], True)
    assert await _page(harness, project, limit=9, order="desc", before=ids[4]) == ([ids[6], ids[5]], False)


async def test_after_and_before_together_bound_a_window(seven: tuple[Harness, str, list[str]]) -> None:
    harness, project, ids = seven
    assert await _page(harness, project, limit=10, order="asc", after=ids[1], before=ids[5]) == (
        ids[2:5],
        False,
    )


async def test_unknown_or_foreign_cursor_is_a_400(seven: tuple[Harness, str, list[str]]) -> None:
    harness, project, _ = seven
    for cursor in ("file-nope", "file-foreign"):
        with pytest.raises(OasisError) as caught:
            await _page(harness, project, after=cursor)
        assert (caught.value.status, caught.value.param) == (400, "after")


async def test_a_deleted_cursor_still_anchors_the_next_page(seven: tuple[Harness, str, list[str]]) -> None:
    harness, project, ids = seven
    async with harness.container.db.session() as session:
        row = await file_rows.get_file(session, project, ids[3])
        assert row is not None
        await file_rows.mark_deleted(session, row)
        await session.commit()
    assert await _page(harness, project, limit=10, order="asc", after=ids[3]) == (ids[4:], False)
    assert await _page(harness, project, limit=10, order="asc") == (ids[:3] + ids[4:], False)
