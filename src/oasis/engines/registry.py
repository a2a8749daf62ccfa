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
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from oasis.engines.base import Engine, EngineFactory
from oasis.engines.options import OPTIONS_BY_ENGINE, check_model_config, weights_source
from oasis.settings import ConfigError, ModelSpec

log = logging.getLogger("oasis.models")

ModelStatus = Literal["loading", "ready", "failed"]


class UnknownEngineKind(ConfigError):
    pass


# The pyproject extra that brings each engine kind's libraries, where it is not `all`.
ENGINE_EXTRAS = {"diffusers": "diffusers"}


# The project a request or a job acts for: a model added for a project (a fine-tune) resolves only there.
_serving_project: ContextVar[str | None] = ContextVar("oasis_serving_project", default=None)


def serve_for_project(project_id: str | None) -> None:
    """Set by each request once its key is known, and by each job for its project (tasks it starts inherit it)."""
    _serving_project.set(project_id)


def serving_project() -> str | None:
    return _serving_project.get()


def check_models(specs: list[ModelSpec], factories: Mapping[str, EngineFactory]) -> None:
    """Refuses, before anything loads, a model naming an engine kind we cannot run, an option its engine does
    not take, or weights that are not there."""
    unknown = sorted({spec.engine for spec in specs} - set(factories))
    not_installed = [kind for kind in unknown if kind in OPTIONS_BY_ENGINE]
    if not_installed:
        kind = not_installed[0]
        raise UnknownEngineKind(
            f"engine {kind} in `models` is not installed here: pip install 'oasis[{ENGINE_EXTRAS.get(kind, 'all')}]'"
        )
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
        self._added: dict[str, tuple[ModelSpec, str]] = {}  # id -> (spec, the project it is served to)
        self.settled = asyncio.Event()

    @property
    def specs(self) -> list[ModelSpec]:
        return list(self._specs)

    @property
    def states(self) -> list[ModelState]:
        """The configured models' states: /health and the metrics show these to anyone who may ask, and a
        project's fine-tunes (loaded on demand, named with its id) are its own business."""
        return [self._states[spec.id] for spec in self._specs]

    def resolve(self, name: str) -> ModelSpec | None:
        """The configured model behind an id or alias, or a model added for the project being served."""
        spec = self._by_name.get(name)
        if spec is None and name in self._added:
            added, project_id = self._added[name]
            return added if project_id == _serving_project.get() else None
        return spec

    def configured(self, name: str) -> bool:
        return name in self._by_name

    def state(self, name: str) -> ModelState | None:
        spec = self.resolve(name)
        return None if spec is None else self._states.get(spec.id)

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

    async def add(self, spec: ModelSpec, project_id: str) -> Engine:
        """Loads a model that is not in the configuration (a fine-tune, loaded when first asked for), served to
        one project only; it is not listed in `specs`. Raises when it cannot load."""
        if spec.id in self._by_name or spec.id in self._added:
            raise ValueError(f"the model name {spec.id} is already in use")
        check_models([spec], self._factories)
        self._added[spec.id] = (spec, project_id)
        self._states[spec.id] = ModelState(spec)
        await self._load(spec)
        engine = self._engines.get(spec.id)
        if engine is None:
            error = self._states[spec.id].error
            self._forget(spec.id)
            raise RuntimeError(f"the model {spec.id} could not load: {error}")
        return engine

    async def remove(self, model_id: str, drain_seconds: float = 600.0) -> None:
        """Unloads a model that `add` loaded: no new request finds it, and the engine closes once the requests
        it is serving have ended (at most `drain_seconds` later)."""
        engine = self._engines.pop(model_id, None)
        self._forget(model_id)
        if engine is None:
            return
        deadline = time.monotonic() + drain_seconds
        while getattr(engine, "busy", False) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        await engine.close()

    def _forget(self, model_id: str) -> None:
        if self._added.pop(model_id, None) is not None:
            self._states.pop(model_id, None)

    async def close(self) -> None:
        for engine in self._engines.values():
            await engine.close()
        self._engines.clear()
