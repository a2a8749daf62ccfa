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


def dict_list_body(page: Page[dict[str, Any]]) -> dict[str, Any]:
    """The same envelope for services that answer plain JSON objects."""
    items = page.items
    return {
        "object": "list",
        "data": items,
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": page.has_more,
    }
