"""The list envelope every paged endpoint answers with."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from oasis.storage.pagination import Page


class _HasId(Protocol):
    id: str


Item = TypeVar("Item", bound=_HasId)


def list_body(page: Page[Item]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": page.items,
        "first_id": page.items[0].id if page.items else None,
        "last_id": page.items[-1].id if page.items else None,
        "has_more": page.has_more,
    }
