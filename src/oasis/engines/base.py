"""What every engine is: a lifecycle. The capability protocols (text.py, embedding.py, speech.py,
forwarding.py) extend it; backends implement them; nothing here imports a backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from oasis.settings import ModelSpec


class Engine(Protocol):
    async def start(self) -> None:
        """Load weights or connect; called once in the app's lifespan, before /health turns 200."""
        ...

    async def close(self) -> None: ...


EngineFactory = Callable[[ModelSpec], Engine]
