"""How long a file is kept when it is asked to expire (`expires_after`, a batch's `output_expires_after`)."""

from __future__ import annotations

from oasis.errors import invalid_request
from oasis.protocol.extensions import MAX_EXPIRY_SECONDS, MIN_EXPIRY_SECONDS


def expiry_seconds(value: object, param: str) -> int:
    """`value` (a form's text or a JSON number) as whole seconds within OpenAI's bounds, else a 400 on `param`."""
    try:
        seconds = int(value) if isinstance(value, str | int) and not isinstance(value, bool) else None
    except ValueError:
        seconds = None
    if seconds is None:
        raise invalid_request(f"'{param}' must be a whole number of seconds.", param=param)
    if not MIN_EXPIRY_SECONDS <= seconds <= MAX_EXPIRY_SECONDS:
        raise invalid_request(
            f"'{param}' must be between {MIN_EXPIRY_SECONDS} (1 hour) and {MAX_EXPIRY_SECONDS} (30 days); "
            f"got {seconds}.",
            param=param,
        )
    return seconds


def file_expiry(anchor: object, seconds: object) -> int | None:
    """A file's `expires_after` (`anchor`, `seconds`) as the seconds after its creation that it expires, or None when
    neither is given."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise invalid_request("'expires_after.anchor' must be 'created_at'.", param="expires_after.anchor")
    return expiry_seconds(seconds, "expires_after.seconds")
