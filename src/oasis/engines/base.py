"""What every engine is: a lifecycle. The capability protocols (text.py, embedding.py, speech.py,
forwarding.py) extend it; backends implement them; nothing here imports a backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from oasis.settings import ModelSpec


class Engine(Protocol):
    async def start(self) -> None:
        """Load weights or connect; called once in the app's lifespan, before /health turns 200."""
        ...

    async def close(self) -> None: ...


EngineFactory = Callable[[ModelSpec], Engine]


@dataclass(frozen=True)
class EngineLoad:
    queued: int  # requests waiting for a slot
    busy: int  # slots working now
    slots: int  # slots in all


@runtime_checkable
class ReportsLoad(Protocol):
    """An engine with a queue says how full it is (for /metrics)."""

    def load(self) -> EngineLoad: ...
