"""Attribute filters for vector store search: comparisons (eq, ne, gt, gte, lt, lte; in, nin against a list) and
compounds (and, or)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from oasis.errors import invalid_request

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "in": lambda attribute, values: attribute in values,
    "nin": lambda attribute, values: attribute not in values,
}
_AGAINST_LISTS = ("in", "nin")


def check(filters: Any, param: str = "filters") -> None:
    if not isinstance(filters, dict):
        raise invalid_request(f"'{param}' must be an object.", param=param)
    kind = filters.get("type")
    if kind in ("and", "or"):
        nested = filters.get("filters")
        if not isinstance(nested, list) or not nested:
            raise invalid_request(f"'{param}.filters' must be a non-empty list.", param=f"{param}.filters")
        for index, item in enumerate(nested):
            check(item, f"{param}.filters[{index}]")
    elif kind in _COMPARISONS:
        if not isinstance(filters.get("key"), str) or "value" not in filters:
            raise invalid_request(f"'{param}' needs a string 'key' and a 'value'.", param=param)
        if kind in _AGAINST_LISTS and not isinstance(filters["value"], list):
            raise invalid_request(f"'{param}.value' must be a list for '{kind}'.", param=f"{param}.value")
    else:
        kinds = ", ".join([*_COMPARISONS, "and", "or"])
        raise invalid_request(f"'{param}.type' must be one of {kinds}.", param=f"{param}.type")


def matches(filters: dict[str, Any], attributes: dict[str, Any]) -> bool:
    kind = filters["type"]
    if kind == "and":
        return all(matches(item, attributes) for item in filters["filters"])
    if kind == "or":
        return any(matches(item, attributes) for item in filters["filters"])
    if filters["key"] not in attributes:
        return False
    try:
        return bool(_COMPARISONS[kind](attributes[filters["key"]], filters["value"]))
    except TypeError:  # comparing a string with a number: not a match
        return False
