"""Routes a model to OpenAI-compatible servers, with several replicas chosen by least outstanding requests.

Options (config file `options:`): `base_url` or `base_urls` (each ending in /v1), `api_key`, `model` (the
name upstream, default the model's id), `timeout` seconds (default 600).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from oasis.engines.options import UpstreamOptions
from oasis.errors import OasisError
from oasis.settings import ModelSpec


@dataclass
class Replica:
    base_url: str
    outstanding: int = 0


def pick_replica(replicas: list[Replica]) -> Replica:
    """The replica with the fewest requests in flight; ties go to the earliest listed."""
    return min(replicas, key=lambda replica: replica.outstanding)


class UpstreamEngine:
    def __init__(self, spec: ModelSpec) -> None:
        options = UpstreamOptions.model_validate(spec.options)
        self.spec = spec
        self.upstream_model: str = options.model or spec.id
        self.replicas = [Replica(url.rstrip("/")) for url in options.urls]
        key = options.api_key.get_secret_value() if options.api_key else None
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(options.timeout, connect=10))

    async def start(self) -> None:
        """Nothing to load: an upstream that is down shows in the requests that reach it, as a 502."""

    async def close(self) -> None:
        await self._client.aclose()

    @asynccontextmanager
    async def _replica(self) -> AsyncIterator[Replica]:
        replica = pick_replica(self.replicas)
        replica.outstanding += 1
        try:
            yield replica
        finally:
            replica.outstanding -= 1

    def _body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": self.upstream_model}

    async def forward(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post(path, json=self._body(body))

    async def _post(self, path: str, **content: Any) -> dict[str, Any]:
        async with self._replica() as replica:
            try:
                response = await self._client.post(replica.base_url + path, **content)
            except httpx.HTTPError as exc:
                raise _unreachable(replica, exc) from None
            if response.status_code >= 400:
                raise _upstream_error(response.status_code, response.content)
            reply: dict[str, Any] = response.json()
            return reply

    async def forward_files(
        self, path: str, fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]
    ) -> dict[str, Any]:
        return await self._post(path, data={**fields, "model": self.upstream_model}, files=files)

    async def forward_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        async with self._replica() as replica:
            try:
                async with self._client.stream("POST", replica.base_url + path, json=self._body(body)) as response:
                    if response.status_code >= 400:
                        raise _upstream_error(response.status_code, await response.aread())
                    async for line in response.aiter_lines():
                        if not line.startswith("data:"):
                            continue
                        data = line[len("data:") :].strip()
                        if data == "[DONE]":
                            return
                        event = json.loads(data)
                        if isinstance(event, dict) and "error" in event:
                            error = event["error"] or {}
                            raise OasisError(
                                502,
                                str(error.get("message", "the upstream stream failed")),
                                type=str(error.get("type", "server_error")),
                                code=error.get("code"),
                            )
                        yield event
            except httpx.HTTPError as exc:
                raise _unreachable(replica, exc) from None


def _unreachable(replica: Replica, exc: Exception) -> OasisError:
    return OasisError(
        502, f"The upstream server {replica.base_url} did not answer: {type(exc).__name__}.", type="server_error"
    )


def _upstream_error(status: int, content: bytes) -> OasisError:
    """Keeps the upstream's envelope when it sent one, so clients see the same error OpenAI's shape carries."""
    try:
        error = json.loads(content).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        return OasisError(
            status,
            str(error.get("message", "")),
            type=str(error.get("type") or ("server_error" if status >= 500 else "invalid_request_error")),
            param=error.get("param"),
            code=error.get("code"),
        )
    text = content.decode("utf-8", errors="replace")[:500]
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return OasisError(status, f"The upstream server answered {status}: {text}", type=kind)
