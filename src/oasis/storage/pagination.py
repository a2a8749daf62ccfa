"""Cursor pagination shared by every list endpoint: limit, order, after, before over the `seq` column."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from oasis.errors import invalid_request

Row = TypeVar("Row")
Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class PageRequest:
    limit: int = 20
    order: Order = "desc"
    after: str | None = None
    before: str | None = None


@dataclass(frozen=True)
class Page(Generic[Row]):
    items: list[Row]
    has_more: bool


async def _cursor_seq(
    session: AsyncSession, table: Any, scope: list[ColumnElement[bool]], cursor: str, param: str
) -> int:
    # Tombstoned rows still anchor a cursor: clients delete while they page. An id can name several rows (a
    # file detached from a store and attached again): the live one, else the newest, is where the client is.
    query = select(table.seq).where(table.id == cursor, *scope)
    if hasattr(table, "deleted_at"):
        query = query.order_by(table.deleted_at.is_(None).desc())
    seq = await session.scalar(query.order_by(table.seq.desc()).limit(1))
    if seq is None:
        raise invalid_request(f"No object with id {cursor!r} to page {param}.", param=param)
    return int(seq)


async def paginate(
    session: AsyncSession,
    table: Any,
    *,
    scope: list[ColumnElement[bool]],
    filters: list[ColumnElement[bool]] | None = None,
    page: PageRequest,
) -> Page[Any]:
    """One page of `table` rows inside `scope` (the project) matching `filters`, live rows only.

    `after` moves along `order`, `before` against it; with `before` alone the page is the `limit` rows
    right before the cursor, still returned in `order`.
    """
    conditions = [*scope, *(filters or [])]
    if hasattr(table, "deleted_at"):  # some objects are never deleted (fine-tuning jobs and their events)
        conditions.append(table.deleted_at.is_(None))
    descending = page.order == "desc"
    if page.after is not None:
        seq = await _cursor_seq(session, table, scope, page.after, "after")
        conditions.append(table.seq < seq if descending else table.seq > seq)
    if page.before is not None:
        seq = await _cursor_seq(session, table, scope, page.before, "before")
        conditions.append(table.seq > seq if descending else table.seq < seq)
    backwards = page.before is not None and page.after is None
    walk_descending = descending != backwards
    statement = (
        select(table)
        .where(*conditions)
        .order_by(table.seq.desc() if walk_descending else table.seq.asc())
        .limit(page.limit + 1)
    )
    rows = list((await session.scalars(statement)).all())
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    if backwards:
        rows.reverse()
    return Page(items=rows, has_more=has_more)


def page_of(items: list[dict[str, Any]], page: PageRequest) -> Page[dict[str, Any]]:
    """One page of a list kept whole (an object's messages or items, in their order), by the items' ids."""
    ordered = items[::-1] if page.order == "desc" else list(items)
    ids = [item["id"] for item in ordered]
    start, end = 0, len(ordered)
    for cursor, param in ((page.after, "after"), (page.before, "before")):
        if cursor is not None and cursor not in ids:
            raise invalid_request(f"No object with id {cursor!r} to page {param}.", param=param)
    if page.after is not None:
        start = ids.index(page.after) + 1
    if page.before is not None:
        end = ids.index(page.before)
    if page.before is not None and page.after is None:  # the `limit` items right before the cursor
        start = max(start, end - page.limit)
        return Page(items=ordered[start:end], has_more=start > 0)
    chosen = ordered[start:end][: page.limit]
    return Page(items=chosen, has_more=start + page.limit < end)
