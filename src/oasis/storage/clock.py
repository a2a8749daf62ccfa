"""Time and ids in one place, so every object is stamped the same way."""

from __future__ import annotations

import secrets
import string
import time

_ALPHABET = string.ascii_letters + string.digits


def now() -> int:
    return int(time.time())


def new_id(prefix: str, length: int = 24) -> str:
    """`prefix` + random base62, the shape of OpenAI's ids (`file-…`, `batch_…`)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))
