"""Numbers in JSON bodies that no float holds, and the ones JSON does not have: `1e400` is valid JSON, and
json.loads reads it as infinity; it also reads the bare words NaN, Infinity and -Infinity, which are not JSON at
all. None of them can be written back as JSON (a stored tool schema holding one made every later answer about the
run a 500), so such bodies are refused with a 400, as OpenAI's parser would not take them either."""

from __future__ import annotations

import json
import math
import re

# A cheap test first: an exponent of three digits or more, a run of 309 digits (1 followed by 309 zeros, .0), or
# the words (which may as well be inside a string: the parse tells).
_MAYBE_HUGE = re.compile(rb"[eE]\+?0*[1-9][0-9]{2}|[0-9]{309}|NaN|Infinity")
MESSAGE = (
    "A number in the request is NaN, Infinity or past the range of a 64-bit float (about 1.8e308),"
    " which JSON cannot carry."
)
_SEARCH_TAIL = 320  # bytes of the previous chunk kept, so a number split across two chunks is still seen


class _Infinite(Exception):
    pass


def may_hold_one(tail: bytes, chunk: bytes) -> bool:
    return _MAYBE_HUGE.search(tail[-_SEARCH_TAIL:] + chunk) is not None


def holds_one(body: bytes) -> bool:
    """True when a number in the JSON body is past float's range (json.loads would read it as ±infinity), or is
    one of the words NaN, Infinity and -Infinity."""
    if _MAYBE_HUGE.search(body) is None:
        return False
    try:
        json.loads(body, parse_float=_finite, parse_constant=_not_json)
    except _Infinite:
        return True
    except (ValueError, RecursionError):
        return False  # not JSON: the route's own parser answers it
    return False


def _not_json(word: str) -> float:
    raise _Infinite


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _Infinite
    return value
