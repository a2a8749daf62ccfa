"""`GET /metrics`: the counters and histograms recorded as things happen (oasis.metrics), plus the states read
at scrape time: each model's state, each engine's queue and busy slots, each job kind's queue depth."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from oasis.engines.base import ReportsLoad
from oasis.engines.registry import EngineRegistry
from oasis.metrics import REGISTRY
from oasis.storage import batches, vector_stores
from oasis.storage.db import Database

log = logging.getLogger("oasis.metrics")
DATABASE_SECONDS = 3.0

MODEL_STATES = ("loading", "ready", "failed")


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


class Monitoring:
    def __init__(self, registry: EngineRegistry, db: Database) -> None:
        self._registry = registry
        self._db = db

    def _model_families(self) -> list[Metric]:
        by_state: Counter[str] = Counter(state.status for state in self._registry.states)
        models = GaugeMetricFamily("oasis_models", "Configured models by state.", labels=["state"])
        for state in MODEL_STATES:
            models.add_metric([state], by_state[state])
        queued = GaugeMetricFamily("oasis_engine_queue_depth", "Requests waiting for a slot.", labels=["model"])
        busy = GaugeMetricFamily("oasis_engine_busy_slots", "Slots working now.", labels=["model"])
        slots = GaugeMetricFamily("oasis_engine_slots", "Slots in all.", labels=["model"])
        for spec in self._registry.specs:
            engine = self._registry.engine(spec.id)
            if isinstance(engine, ReportsLoad):
                load = engine.load()
                queued.add_metric([spec.id], load.queued)
                busy.add_metric([spec.id], load.busy)
                slots.add_metric([spec.id], load.slots)
        return [models, queued, busy, slots]

    async def _job_families(self) -> list[Metric]:
        database = GaugeMetricFamily("oasis_database_up", "Whether the database answered this scrape's queries.")
        try:
            # Within a scrape's patience (Prometheus waits 10 s): a database that hangs rather than refuses too.
            depths = await asyncio.wait_for(self._job_depths(), timeout=DATABASE_SECONDS)
        except Exception:
            # A database that does not answer must not cost the scrape the process, HTTP and model metrics,
            # just when they are wanted.
            log.warning("metrics: the database did not answer", exc_info=True)
            database.add_metric([], 0)
            return [database]
        database.add_metric([], 1)
        jobs = GaugeMetricFamily(
            "oasis_job_queue_depth", "Background jobs waiting or running, by kind.", labels=["kind"]
        )
        for kind, depth in depths.items():
            jobs.add_metric([kind], depth)
        return [jobs, database]

    async def _job_depths(self) -> dict[str, int]:
        async with self._db.session() as session:
            return {
                "ingestion": await vector_stores.count_waiting_files(session),
                "batch": await batches.count_running(session),
            }

    async def scrape(self) -> bytes:
        now = CollectorRegistry()
        now.register(_Snapshot([*self._model_families(), *await self._job_families()]))
        return generate_latest(REGISTRY) + generate_latest(now)
