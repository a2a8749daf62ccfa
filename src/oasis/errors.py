"""The one typed error that every layer raises; api/errors.py turns it into OpenAI's envelope.

It lives outside api/ so that services can raise it without importing FastAPI.
"""

from __future__ import annotations


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
