"""The `metadata` every OpenAI object may carry, checked by OpenAI's rules."""

from __future__ import annotations

from typing import Any

from oasis.errors import invalid_request


def check_metadata(metadata: dict[str, Any] | None, param: str = "metadata") -> dict[str, str]:
    """OpenAI's rule: at most 16 pairs, keys up to 64 characters, string values up to 512."""
    if metadata is None:
        return {}
    if len(metadata) > 16:
        raise invalid_request(f"'{param}' holds at most 16 key-value pairs.", param=param)
    for key, value in metadata.items():
        if len(key) > 64:
            raise invalid_request(f"'{param}' keys are at most 64 characters.", param=param)
        if not isinstance(value, str) or len(value) > 512:
            raise invalid_request(f"'{param}' values are strings of at most 512 characters.", param=f"{param}.{key}")
    return dict(metadata)
