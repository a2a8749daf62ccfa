"""The forwarding capability: an engine that answers OpenAI requests by sending them on to another
OpenAI-compatible server (vLLM, llama-server, Ollama, TGI, another oasis)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol, runtime_checkable

from oasis.engines.base import Engine


@runtime_checkable
class ForwardingEngine(Engine, Protocol):
    upstream_model: str

    async def forward(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POSTs `body` to `path` (e.g. "/chat/completions") and returns the JSON reply; upstream errors are
        raised as OasisError with the upstream's status and envelope."""
        ...

    async def forward_files(
        self, path: str, fields: dict[str, str], files: list[tuple[str, tuple[str, bytes, str]]]
    ) -> dict[str, Any]:
        """The same as multipart/form-data (image edits and variations): `files` holds each part as (field,
        (filename, bytes, content type)); a field may repeat (`image[]`)."""
        ...

    def forward_stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """The same with `stream: true`: yields each server-sent event's JSON until `[DONE]`."""
        ...
