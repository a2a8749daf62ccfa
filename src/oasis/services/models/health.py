"""The readiness rule behind `GET /health`: serving when every configured engine kind has a ready model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from oasis.engines.registry import ModelState


@dataclass(frozen=True)
class Readiness:
    serving: bool
    status: str  # ok | loading | error
    error: str | None
    models: list[dict[str, Any]]


def readiness(states: list[ModelState]) -> Readiness:
    """`ok` (HTTP 200) once each engine kind in the config has at least one ready model, so one broken model
    does not take the server down with it; `loading` while a kind still waits for its first model; `error` when
    every model of some kind failed (nothing will fix that but a restart)."""
    models = [
        {
            "id": state.spec.id,
            "engine": state.spec.engine,
            "state": state.status,
            **({"error": state.error} if state.error else {}),
        }
        for state in states
    ]
    by_kind: dict[str, list[ModelState]] = {}
    for state in states:
        by_kind.setdefault(state.spec.engine, []).append(state)
    dead = [kind for kind, group in by_kind.items() if all(state.status == "failed" for state in group)]
    waiting = [kind for kind, group in by_kind.items() if not any(state.status == "ready" for state in group)]
    if dead:
        failures = [f"{state.spec.id}: {state.error}" for state in states if state.status == "failed"]
        return Readiness(False, "error", "; ".join(failures), models)
    if waiting:
        return Readiness(False, "loading", None, models)
    return Readiness(True, "ok", None, models)
