"""create_app(settings): the one wiring point. The container is built in the lifespan, never at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from oasis import __version__
from oasis.api import (
    assistants,
    audio,
    batches,
    chat,
    completions,
    containers,
    conversations,
    embeddings,
    files,
    fine_tuning,
    health,
    images,
    metrics,
    models,
    moderations,
    projects,
    responses,
    runs,
    threads,
    tokenizer,
    uploads,
    vector_stores,
)
from oasis.api.dashboard import install_dashboard
from oasis.api.docs import install_docs
from oasis.api.errors import install_error_handlers
from oasis.api.middleware import RequestContextMiddleware
from oasis.container import Container
from oasis.engines.base import EngineFactory
from oasis.engines.defaults import served_models
from oasis.engines.kinds import installed_engine_factories
from oasis.engines.registry import check_models
from oasis.metrics import observe_request
from oasis.settings import ConfigError, ModelSpec, Settings

log = logging.getLogger("oasis")

# The operations that take a file as multipart form data.
UPLOAD_PATHS = frozenset({"/v1/files", "/v1/audio/transcriptions", "/v1/audio/translations"})
UPLOAD_PART_PATHS = re.compile(r"/v1/uploads/[^/]+/parts")  # an upload's parts, up to 64 MB each
# Multipart framing and the `purpose` field ride on top of the largest file.
_MULTIPART_OVERHEAD = 1 << 20


class ModelsFailed(RuntimeError):
    """`oasis worker` found a model it serves unable to load."""


def engine_setup(
    settings: Settings, engine_factories: Mapping[str, EngineFactory] | None = None
) -> tuple[dict[str, EngineFactory], list[ModelSpec]]:
    """The engine kinds available and the models to serve: the config's, else the installed defaults."""
    factories = installed_engine_factories() if engine_factories is None else dict(engine_factories)
    specs = served_models(settings.models, set(factories), include_defaults=settings.defaults)
    # Refuse a config mistake (an engine kind we cannot run, an unknown option, missing weights) before a server
    # starts, not after.
    check_models(specs, factories)
    _check_named_models(settings, specs)
    for spec in specs:
        aliases = f" (aliases: {', '.join(spec.aliases)})" if spec.aliases else ""
        log.info("serving %s on %s%s", spec.id, spec.engine, aliases)
    return factories, specs


def _check_named_models(settings: Settings, specs: list[ModelSpec]) -> None:
    """A model the config names for another's use (the embedder of new vector stores, a moderation judge) must be
    one it serves: else every ingestion or moderation would fail later, one by one. The default embedder is only
    checked when the config names it, since a machine without its weights still serves everything else."""
    served = {name for spec in specs for name in (spec.id, *spec.aliases)}
    named: list[tuple[str, str]] = []
    if "embedding_model" in settings.vector_stores.model_fields_set:
        named.append(("vector_stores.embedding_model", settings.vector_stores.embedding_model))
    for spec in specs:
        if spec.engine == "llm-judge" and isinstance(judge := spec.options.get("judge_model"), str):
            named.append((f"model {spec.id!r}: `judge_model`", judge))
    for place, name in named:
        if name not in served and not name.startswith("ft:"):  # a fine-tune is served once its project asks
            listed = ", ".join(sorted(served))
            raise ConfigError(f"{place}: {name!r} is not a served model (ids and aliases: {listed})")


async def run_worker(settings: Settings) -> None:
    """`oasis worker`: the background job loop with its own engines and no HTTP, until cancelled."""
    factories, specs = engine_setup(settings)
    container = Container.build(settings, specs, factories)
    # SIGTERM (a supervisor's, a container runtime's) stops as Ctrl-C does: the jobs in hand get their moment to
    # finish and the rest give their leases back, rather than the process dying with them held.
    main = asyncio.current_task()
    if main is not None:

        def stop_once() -> None:
            # A second SIGTERM while stopping is ignored: cancelling again would cut the jobs' hand-back short.
            if not main.cancelling():
                main.cancel()

        with contextlib.suppress(NotImplementedError):  # no signal handlers on this platform's loop
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop_once)
    try:
        await container.db.migrate()
        await container.start_engines()
        failed = [state for state in container.registry.states if state.status == "failed"]
        if failed:
            # A dedicated worker with a broken model would fail every job that needs it, jobs that a healthy
            # worker could run: it stops instead, so that its supervisor restarts it or someone looks.
            reasons = "; ".join(f"{state.spec.id}: {state.error}" for state in failed)
            raise ModelsFailed(f"not taking jobs: models failed to load ({reasons})")
        await container.run_jobs()
    finally:
        await container.close()


def create_app(settings: Settings, engine_factories: Mapping[str, EngineFactory] | None = None) -> FastAPI:
    factories, specs = engine_setup(settings, engine_factories)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container = Container.build(settings, specs, factories)
        await container.db.migrate()
        background = [asyncio.create_task(container.start_engines())]
        if settings.workers.in_process:
            background.append(asyncio.create_task(container.run_worker()))
        app.state.container = container
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await container.close()

    app = FastAPI(title="oasis", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    install_docs(app)
    install_dashboard(app)
    install_error_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        max_upload_body_bytes=settings.files.max_upload_bytes + _MULTIPART_OVERHEAD,
        max_json_body_bytes=settings.server.max_json_body_bytes,
        upload_paths=UPLOAD_PATHS,
        upload_path_pattern=UPLOAD_PART_PATHS,
        observe=observe_request,
    )

    # Each router straight into the app under /v1: a router nested in another has its routes built once more.
    # FastAPI tries the routers in this order, each route of each until one matches (~1.3 us a route): the
    # inference endpoints go first, so that their requests reach the handler without trying ~30 others.
    for router in (
        chat.router,
        completions.router,
        embeddings.router,
        responses.router,
        conversations.router,
        containers.router,
        assistants.router,
        runs.router,  # before threads: POST /threads/runs is not a thread id
        threads.router,
        audio.router,
        batches.router,
        models.router,
        files.router,
        uploads.router,
        fine_tuning.router,
        images.router,
        moderations.router,
        projects.router,
        vector_stores.router,
    ):
        app.include_router(router, prefix="/v1")
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(tokenizer.router)
    return app
