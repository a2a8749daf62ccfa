"""Maps model ids and aliases to engine instances (DESIGN.md habit 3), and knows each model's state.

Each engine kind registers a factory; the config file's `models:` list names a kind per model. Tests plug
tiny real engines in through the same factories mapping. Models load one after another and fail alone: a
model that cannot load is `failed` with its reason, and the others are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from oasis.engines.base import Engine, EngineFactory
from oasis.engines.options import check_model_config, weights_source
from oasis.settings import ConfigError, ModelSpec

log = logging.getLogger("oasis.models")

ModelStatus = Literal["loading", "ready", "failed"]


class UnknownEngineKind(ConfigError):
    pass


def check_models(specs: list[ModelSpec], factories: Mapping[str, EngineFactory]) -> None:
    """Refuses, before anything loads, a model naming an engine kind we cannot run, an option its engine does
    not take, or weights that are not there."""
    unknown = sorted({spec.engine for spec in specs} - set(factories))
    if unknown:
        known = ", ".join(sorted(factories)) or "none installed"
        raise UnknownEngineKind(f"unknown engine kind(s) {', '.join(unknown)} in `models` (known: {known})")
    for spec in specs:
        check_model_config(spec)


@dataclass
class ModelState:
    spec: ModelSpec
    status: ModelStatus = "loading"
    error: str | None = None


class EngineRegistry:
    def __init__(self, specs: list[ModelSpec], factories: Mapping[str, EngineFactory]) -> None:
        check_models(specs, factories)
        self._specs = list(specs)
        self._factories = dict(factories)
        self._by_name: dict[str, ModelSpec] = {}
        for spec in specs:
            for name in (spec.id, *spec.aliases):
                self._by_name[name] = spec
        self._engines: dict[str, Engine] = {}
        self._states = {spec.id: ModelState(spec) for spec in specs}
        self.settled = asyncio.Event()

    @property
    def specs(self) -> list[ModelSpec]:
        return list(self._specs)

    @property
    def states(self) -> list[ModelState]:
        return list(self._states.values())

    def resolve(self, name: str) -> ModelSpec | None:
        """The configured model behind an id or alias."""
        return self._by_name.get(name)

    def state(self, name: str) -> ModelState | None:
        spec = self.resolve(name)
        return None if spec is None else self._states[spec.id]

    def engine(self, name: str) -> Engine | None:
        spec = self.resolve(name)
        return None if spec is None else self._engines.get(spec.id)

    async def start(self) -> None:
        """Loads every model in turn; one that fails is marked failed and the next one loads."""
        try:
            for spec in self._specs:
                await self._load(spec)
        finally:
            self.settled.set()

    async def _load(self, spec: ModelSpec) -> None:
        state = self._states[spec.id]
        log.info("loading %s (%s, %s)", spec.id, spec.engine, weights_source(spec))
        started = time.perf_counter()
        engine: Engine | None = None
        try:
            engine = self._factories[spec.engine](spec)
            await engine.start()
        except Exception as exc:
            state.status, state.error = "failed", f"{type(exc).__name__}: {exc}"
            log.error("failed %s: %s", spec.id, state.error)
            if engine is not None:
                with contextlib.suppress(Exception):  # its thread pools and half-loaded weights go too
                    await engine.close()
            return
        self._engines[spec.id] = engine
        state.status = "ready"
        log.info("ready %s in %.1f s", spec.id, time.perf_counter() - started)

    async def add(self, spec: ModelSpec) -> Engine:
        """Loads a model that is not in the configuration (a fine-tune, loaded when first asked for); it is not
        listed in `specs`. Raises when it cannot load."""
        check_models([spec], self._factories)
        self._by_name[spec.id] = spec
        self._states[spec.id] = ModelState(spec)
        await self._load(spec)
        engine = self._engines.get(spec.id)
        if engine is None:
            error = self._states[spec.id].error
            self._forget(spec.id)
            raise RuntimeError(f"the model {spec.id} could not load: {error}")
        return engine

    async def remove(self, model_id: str) -> None:
        """Unloads a model that `add` loaded."""
        engine = self._engines.pop(model_id, None)
        self._forget(model_id)
        if engine is not None:
            await engine.close()

    def _forget(self, model_id: str) -> None:
        self._states.pop(model_id, None)
        if self._by_name.get(model_id) is not None and self._by_name[model_id].id == model_id:
            del self._by_name[model_id]

    async def close(self) -> None:
        for engine in self._engines.values():
            await engine.close()
        self._engines.clear()
