"""JSON bodies nested deeper than any request needs: `parameters` or a JSON Schema nested a few hundred levels
deep was stored, and then every answer that wrote it back (the assistant, its runs, the lists holding them) was
a 500, since pydantic's serializer stops at about 255 levels. Such bodies are refused with a 400 up front.

The check runs on the event loop before authentication, so it stays at C speed: only a body holding more than
MAX_DEPTH brackets is measured, with its strings cut out by a regular expression and the brackets counted by
numpy a megabyte at a time."""

from __future__ import annotations

import re

import numpy as np

MAX_DEPTH = 128
MESSAGE = f"The request body nests objects and arrays more than {MAX_DEPTH} levels deep."
# A string never closed runs to the end of the body: were it left unmatched, the search would try again from each
# quote inside it, which took minutes for a body of escaped quotes.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_BLOCK = 1 << 20


def brackets_in(chunk: bytes) -> int:
    """How many objects and arrays `chunk` may open: a body with at most MAX_DEPTH of them needs no measuring."""
    return chunk.count(b"[") + chunk.count(b"{")


def too_deep(body: bytes) -> bool:
    """True when the JSON body nests objects and arrays more than MAX_DEPTH levels deep."""
    if brackets_in(body) <= MAX_DEPTH:
        return False  # too few to nest that deep: nothing to measure
    structure = _STRING.sub(b"", body)
    depth = 0
    for start in range(0, len(structure), _BLOCK):
        block = np.frombuffer(structure, dtype=np.uint8, count=min(_BLOCK, len(structure) - start), offset=start)
        opens = (block == ord("[")) | (block == ord("{"))
        closes = (block == ord("]")) | (block == ord("}"))
        levels = depth + np.cumsum(opens.astype(np.int32) - closes.astype(np.int32))
        if levels.size and int(levels.max()) > MAX_DEPTH:
            return True
        depth = int(levels[-1]) if levels.size else depth
    return False
