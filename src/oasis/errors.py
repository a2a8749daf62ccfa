"""The one typed error that every layer raises; api/errors.py turns it into OpenAI's envelope.

It lives outside api/ so that services can raise it without importing FastAPI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class OasisError(Exception):
    """An error with everything OpenAI's `{"error": {...}}` envelope carries, plus the HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> OasisError:
    return OasisError(400, message, param=param, code=code)


def not_found(message: str, *, param: str | None = None, code: str | None = None) -> OasisError:
    return OasisError(404, message, param=param, code=code)


def too_large(message: str, *, param: str | None = None) -> OasisError:
    return OasisError(413, message, param=param, code="request_too_large")


def permission_denied(message: str, *, param: str | None = None, code: str | None = None) -> OasisError:
    return OasisError(403, message, type="permission_error", param=param, code=code)


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "json-or-python", "is-instance"}


def _is_type_tag(part: str) -> bool:
    """Pydantic puts union members' type names in error locations; OpenAI's field names are snake_case."""
    return (
        part in _TYPE_TAGS
        or part[:1].isupper()
        or any(mark in part for mark in "[(")
        or part.startswith(("function-", "tagged-union", "constrained-", "literal", "lax-", "json-"))
    )


# Lists of a union discriminated by a field: pydantic puts the item's tag (its role) in the error's location.
_TAGGED_LISTS = {"messages": frozenset({"system", "developer", "user", "assistant", "tool", "function"})}


def _param_from_location(location: tuple[Any, ...]) -> str | None:
    """("body", "messages", 0, "user", "content") -> "messages[0].content", the way OpenAI names a field."""
    parts = [part for part in location if part not in ("body", "query", "path", "header", "form")]
    name = ""
    for position, part in enumerate(parts):
        if isinstance(part, int):
            name += f"[{part}]"
        elif isinstance(part, str) and not _is_type_tag(part):
            tags = (
                _TAGGED_LISTS.get(parts[position - 2])
                if position >= 2 and isinstance(parts[position - 2], str)
                else None
            )
            if tags is not None and isinstance(parts[position - 1], int) and part in tags:
                continue
            name += f".{part}" if name else part
    return name or None


# The value had the right type and broke a bound.
_BOUND_ERRORS = frozenset(
    {
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "multiple_of",
        "string_too_short",
        "string_too_long",
        "too_short",
        "too_long",
    }
)


# The value was not of the type asked: where a union's other member took the type, its error says more.
_TYPE_MISMATCHES = frozenset(
    {
        "string_type",
        "int_type",
        "float_type",
        "bool_type",
        "list_type",
        "dict_type",
        "model_type",
        "none_required",
        "literal_error",  # a string member's literals, given an object
    }
)


def _member(error: Any) -> tuple[Any, ...]:
    """The location of the union member an error comes from (up to its innermost type name)."""
    location = tuple(error.get("loc", ()))
    names = [index for index, part in enumerate(location) if isinstance(part, str) and _is_type_tag(part)]
    return location[: names[-1] + 1] if names else ()


def _refuses_tag(error: Any) -> bool:
    return bool(error.get("type") == "literal_error" and tuple(error.get("loc", ()))[-1:] == ("type",))


def most_telling(errors: Sequence[Any]) -> Any:
    """The first error, or, where a union's members each refused the first error's field, the member's error that
    says more: one naming the bound the value broke (`n_epochs: 0` for `"auto"` or an integer of 1 to 50 is
    "greater than or equal to 1", not "Input should be 'auto'"), else, when the first only says the value is not of
    its member's type, an error inside the value from the member whose type it has (content given as parts, one of
    them wrong: that part's field, not "Input should be a valid string")."""
    first = errors[0]
    param = _param_from_location(tuple(first.get("loc", ())))
    named = [(error, _param_from_location(tuple(error.get("loc", ())))) for error in errors]
    for error, error_param in named:
        if error.get("type") in _BOUND_ERRORS and error_param == param:
            return error
    if first.get("type") in _TYPE_MISMATCHES and param is not None:
        inside = [
            error for error, error_param in named if error_param and error_param.startswith((f"{param}[", f"{param}."))
        ]
        # a member whose tag the value does not carry (`"type": "text"` asked of an image part) says least
        wrong_tag = {_member(error) for error in inside if _refuses_tag(error)}
        telling = [error for error in inside if _member(error) not in wrong_tag] or inside
        if telling:
            return telling[0]
    return first


def invalid_fields(errors: Sequence[Any]) -> OasisError:
    """Pydantic's validation errors as OpenAI's 400: the first one (or what a union says of its field more
    tellingly), its field named the way OpenAI names it."""
    first = most_telling(errors) if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return OasisError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly. The OpenAI API expects a JSON payload.)",
        )
    param = _param_from_location(tuple(first.get("loc", ())))
    message = str(first.get("msg", "invalid value"))
    raw_context = first.get("ctx")
    context: dict[str, Any] = raw_context if isinstance(raw_context, dict) else {}
    if first.get("type") == "union_tag_invalid" and "discriminator" in context:
        # A tagged union (messages by role): name the tag field, as OpenAI does.
        tag_field = str(context["discriminator"]).strip("'")
        param = f"{param}.{tag_field}" if param else tag_field
        message = f"'{context.get('tag')}' is not one of {context.get('expected_tags')}"
    if first.get("type") == "missing":
        text = f"Missing required parameter: '{param}'." if param else "Missing request body."
    else:
        text = f"Invalid value for '{param}': {message}." if param else f"Invalid request: {message}."
    return OasisError(400, text, param=param)
