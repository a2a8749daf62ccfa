"""Numbers in JSON bodies that no float holds: `1e400` is valid JSON, and json.loads reads it as infinity, which
JSON cannot write back (a stored tool schema holding it made every later answer about the run a 500). Such
bodies are refused with a 400, as OpenAI's parser would not take them either."""

from __future__ import annotations

import json
import math
import re

# A cheap test first: an exponent of three digits or more, or a run of 309 digits (1 followed by 309 zeros, .0).
_MAYBE_HUGE = re.compile(rb"[eE]\+?0*[1-9][0-9]{2}|[0-9]{309}")
_SEARCH_TAIL = 320  # bytes of the previous chunk kept, so a number split across two chunks is still seen


class _Infinite(Exception):
    pass


def may_hold_one(tail: bytes, chunk: bytes) -> bool:
    return _MAYBE_HUGE.search(tail[-_SEARCH_TAIL:] + chunk) is not None


def holds_one(body: bytes) -> bool:
    """True when a number in the JSON body is past float's range (json.loads would read it as ±infinity)."""
    if _MAYBE_HUGE.search(body) is None:
        return False
    try:
        json.loads(body, parse_float=_finite)
    except _Infinite:
        return True
    except (ValueError, RecursionError):
        return False  # not JSON: the route's own parser answers it
    return False


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _Infinite
    return value
