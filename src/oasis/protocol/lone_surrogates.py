"""Lone UTF-16 surrogates in JSON bodies: `"\\ud800"` is valid JSON but no text that a model, SQLite or
PostgreSQL can take (encoding it to UTF-8 fails wherever it goes), so requests holding one are refused with a
400 that names the field, before any route sees them."""

from __future__ import annotations

import json
import re
from typing import Any

# Any escape in a JSON string, scanned left to right so that `\\` is consumed whole and the `\u` after it is text.
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)
# Cheap test a chunk passes before the body is scanned whole: a \u escape in the surrogate range D800-DFFF.
_MAYBE = re.compile(rb"\\u[dD][89a-fA-F]")
_SEARCH_TAIL = 5  # bytes of the previous chunk kept, so an escape split across two chunks is still seen


def may_hold_one(tail: bytes, chunk: bytes) -> bool:
    return _MAYBE.search(tail[-_SEARCH_TAIL:] + chunk) is not None


def holds_one(body: bytes) -> bool:
    """True when a \\u escape in a surrogate range is not half of a high-then-low pair."""
    pending_high_end = -1  # where the last unpaired high surrogate's escape ended
    for escape in _ESCAPE.finditer(body):
        code = int(escape.group(1), 16) if escape.group(1) else -1
        if pending_high_end >= 0:
            if 0xDC00 <= code <= 0xDFFF and escape.start() == pending_high_end:
                pending_high_end = -1
                continue
            return True  # the high surrogate before this escape had no low one right after it
        if 0xD800 <= code <= 0xDBFF:
            pending_high_end = escape.end()
        elif 0xDC00 <= code <= 0xDFFF:
            return True
    return pending_high_end >= 0


def param_of(body: bytes) -> str | None:
    """The path of the first key or string holding a lone surrogate (`messages[0].content`), as OpenAI's errors
    name a field; None when the body does not parse."""
    try:
        return _path_in(json.loads(body), "")
    except ValueError:
        return None


def _path_in(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if _lone(value) else None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _path_in(item, f"{path}[{index}]")
            if found is not None:
                return found
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if _lone(key):
                return path  # the object whose key it is: the key itself cannot be written in an error
            found = _path_in(item, inner)
            if found is not None:
                return found
    return None


def _lone(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
