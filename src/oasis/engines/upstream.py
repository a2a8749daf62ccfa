"""Routes a model to OpenAI-compatible servers, with several replicas chosen by least outstanding requests.

Options (config file `options:`): `base_url` or `base_urls` (each ending in /v1), `api_key`, `model` (the
name upstream, default the model's id), `timeout` seconds (default 600).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from oasis.engines.options import UpstreamOptions
from oasis.errors import OasisError
from oasis.settings import ModelSpec

log = logging.getLogger("oasis.upstream")

# A replica that refused a connection is passed over this long: it fails in milliseconds, so by fewest requests in
# flight it would otherwise look the least busy and take most of the traffic.
DOWN_SECONDS = 10.0


@dataclass
class Replica:
    base_url: str
    number: int = 1  # its place in the configured list, for messages that must not show the address
    outstanding: int = 0
    down_until: float = 0.0


def pick_replica(replicas: list[Replica], skip: frozenset[int] = frozenset()) -> Replica:
    """The replica with the fewest requests in flight (ties go to the earliest listed), among those not passed
    over for a refused connection, nor in `skip` (by number); any, when none is left."""
    moment = time.monotonic()
    untried = [r for r in replicas if r.number not in skip]
    usable = [r for r in untried if r.down_until <= moment]
    return min(usable or untried or replicas, key=lambda replica: replica.outstanding)


class UpstreamEngine:
    def __init__(self, spec: ModelSpec) -> None:
        options = UpstreamOptions.model_validate(spec.options)
        self.spec = spec
        self.upstream_model: str = options.model or spec.id
        self.replicas = [Replica(url.rstrip("/"), number) for number, url in enumerate(options.urls, start=1)]
        key = options.api_key.get_secret_value() if options.api_key else None
        headers = {"authorization": f"Bearer {key}"} if key else {}
        # No cap on connections: httpx's default pool of 100 would queue the 101st stream for `timeout` seconds
        # while the upstream has room; the upstream's own queue is the limit that means something.
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(options.timeout, connect=10),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )

    async def start(self) -> None:
        """Nothing to load: an upstream that is down shows in the requests that reach it, as a 502."""

    async def close(self) -> None:
        await self._client.aclose()

    @asynccontextmanager
    async def _replica(self, tried: frozenset[int] = frozenset()) -> AsyncIterator[Replica]:
        replica = pick_replica(self.replicas, tried)
        replica.outstanding += 1
        try:
            yield replica
        finally:
            replica.outstanding -= 1

    def _another_after(self, replica: Replica, exc: httpx.HTTPError, tried: frozenset[int]) -> bool:
        """After a refused connection (nothing was sent: safe to send elsewhere), passes the replica over for a
        while; True when another replica is left to try."""
        if not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            return False
        replica.down_until = time.monotonic() + DOWN_SECONDS
        log.warning("upstream %s of %s refused a connection: %s", replica.base_url, self.spec.id, exc)
        return any(replica.number not in tried for replica in self.replicas)

    def _body(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "model": self.upstream_model}

    async def forward(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._post(path, json=self._body(body))

    async def _post(self, path: str, **content: Any) -> dict[str, Any]:
        tried: frozenset[int] = frozenset()
        while True:
            async with self._replica(tried) as replica:
                tried |= {replica.number}
                try:
                    response = await self._client.post(replica.base_url + path, **content)
                except httpx.HTTPError as exc:
                    if self._another_after(replica, exc, tried):
                        continue
                    raise self._unreachable(replica, exc) from None
                if response.status_code >= 400:
                    raise _upstream_error(response.status_code, response.content)
                reply: dict[str, Any] = response.json()
                return reply

    async def forward_files(
        self, path: str, fields: dict[str, str], files: list[tuple[str, tuple[str, bytes, str]]]
    ) -> dict[str, Any]:
        return await self._post(path, data={**fields, "model": self.upstream_model}, files=files)

    async def forward_stream(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        tried: frozenset[int] = frozenset()
        while True:
            async with self._replica(tried) as replica:
                tried |= {replica.number}
                started = False
                try:
                    async with self._client.stream("POST", replica.base_url + path, json=self._body(body)) as response:
                        started = True
                        if response.status_code >= 400:
                            raise _upstream_error(response.status_code, await response.aread())
                        async for line in response.aiter_lines():
                            if not line.startswith("data:"):
                                continue
                            data = line[len("data:") :].strip()
                            if data == "[DONE]":
                                return
                            try:
                                event = json.loads(data)
                            except ValueError:
                                raise OasisError(
                                    502,
                                    "The upstream server sent a stream event that is not JSON.",
                                    type="server_error",
                                ) from None
                            if isinstance(event, dict) and "error" in event:
                                raise _stream_error(event["error"])
                            yield event
                    return
                except httpx.HTTPError as exc:
                    if not started and self._another_after(replica, exc, tried):
                        continue
                    raise self._unreachable(replica, exc) from None

    def _unreachable(self, replica: Replica, exc: Exception) -> OasisError:
        # The replica by its place in the list: its address is the operator's business, not the client's.
        log.warning("upstream %s of %s did not answer: %r", replica.base_url, self.spec.id, exc)
        where = f" (replica {replica.number} of {len(self.replicas)})" if len(self.replicas) > 1 else ""
        return OasisError(
            502,
            f"The upstream server for '{self.spec.id}'{where} did not answer: {type(exc).__name__}.",
            type="server_error",
        )


def _stream_error(error: Any) -> OasisError:
    """An error event inside an upstream stream: OpenAI's object, or the bare text some servers (TGI) send."""
    if isinstance(error, dict):
        return OasisError(
            502,
            str(error.get("message", "the upstream stream failed")),
            type=str(error.get("type") or "server_error"),
            code=error.get("code"),
        )
    return OasisError(502, str(error or "the upstream stream failed"), type="server_error")


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
