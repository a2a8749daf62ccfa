"""Maps model ids and aliases to engine instances (DESIGN.md habit 3).

Each engine kind registers a factory; the config file's `models:` list names a kind per model. Tests plug
tiny real engines in through the same factories mapping.
"""

from __future__ import annotations

from collections.abc import Mapping

from oasis.engines.base import Engine, EngineFactory
from oasis.settings import ModelSpec


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
