"""Lone UTF-16 surrogates in JSON: `"\\ud800"` is valid JSON but no text that a model, a tokenizer, SQLite or
PostgreSQL can take (encoding it to UTF-8 fails wherever it goes), so requests and uploaded lines holding one are
refused with an error that names the field.

The checks run on the event loop, before authentication, so they stay at C speed: a body is looked at only when
it holds a surrogate escape at all, and then decoded by json and encoded back, which fails exactly when some key
or string holds a lone surrogate; only then is the value walked, to name the field."""

from __future__ import annotations

import json
import re
from typing import Any

# Cheap test a body (or a chunk of it) passes before it is decoded: a \u escape in the range D800-DFFF, or such a
# code point written as UTF-8 bytes (ED A0-BF), which json.loads decodes too, with surrogatepass.
_MAYBE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SEARCH_TAIL = 5  # bytes of the previous chunk kept, so an escape split across two chunks is still seen


def may_hold_one(tail: bytes, chunk: bytes) -> bool:
    return _MAYBE.search(tail[-_SEARCH_TAIL:] + chunk) is not None


def path_in_body(body: bytes) -> str | None:
    """Where a JSON body holds a lone surrogate, as `path_in` names it; None when it holds none, or does not parse
    (the route's own parser answers that)."""
    if _MAYBE.search(body) is None:
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return path_in(value)


def path_in(value: Any) -> str | None:
    """Where decoded JSON holds a key or string with a lone surrogate: its path as OpenAI's errors name a field
    (`messages[0].content`; "" for the top level; for a broken key, the object holding it, since the key itself
    cannot be written in an error), or None when nothing does."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    except (RecursionError, ValueError, TypeError):
        pass  # nested too deep for the encoder (or not plain JSON): the walk below decides
    return _walk(value)


def _walk(value: Any) -> str | None:
    # Without recursion (json.loads nests deeper than Python's recursion limit); paths are built only for the hit.
    pending: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while pending:
        item, where = pending.pop()
        if isinstance(item, str):
            if is_lone(item):
                return _path(where)
        elif isinstance(item, list):
            pending.extend((inner, (where, index)) for index, inner in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            if any(is_lone(key) for key in item if isinstance(key, str)):
                return _path(where)
            pending.extend((inner, (where, key)) for key, inner in reversed(list(item.items())))
    return None


def _path(where: tuple[Any, ...]) -> str:
    parts: list[str] = []
    while where:
        where, step = where
        parts.append(f"[{step}]" if isinstance(step, int) else f".{step}")
    return "".join(reversed(parts)).removeprefix(".")


def lone_surrogate_message(path: str) -> str:
    where = f"'$.{path}'" if path else "Text in the request"
    return f"{where} is not valid Unicode: it holds a lone surrogate (a \\uD800-\\uDFFF escape)."


def is_lone(text: str) -> bool:
    """True when `text` holds a lone surrogate (it cannot be encoded as UTF-8)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
