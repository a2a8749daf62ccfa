"""create_app(settings): the one wiring point. The container is built in the lifespan, never at import."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

from oasis import __version__
from oasis.api import audio, chat, completions, files, health, models, tokenizer
from oasis.api.errors import install_error_handlers
from oasis.api.middleware import RequestContextMiddleware
from oasis.container import Container
from oasis.engines.defaults import default_models
from oasis.engines.registry import EngineFactory, check_engine_kinds, installed_engine_factories
from oasis.settings import Settings

# Multipart framing and the `purpose` field ride on top of the largest file.
_MULTIPART_OVERHEAD = 1 << 20


def create_app(settings: Settings, engine_factories: Mapping[str, EngineFactory] | None = None) -> FastAPI:
    factories = installed_engine_factories() if engine_factories is None else dict(engine_factories)
    specs = settings.models if settings.models is not None else default_models(set(factories))
    # Refuse a config naming an engine kind we cannot run now, before a server starts, not after.
    check_engine_kinds(specs, factories)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        container = Container.build(settings, specs, factories)
        await container.db.migrate()
        loading = asyncio.create_task(container.start_engines())
        app.state.container = container
        try:
            yield
        finally:
            loading.cancel()
            await container.close()

    app = FastAPI(title="oasis", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.files.max_upload_bytes + _MULTIPART_OVERHEAD)

    v1 = APIRouter(prefix="/v1")
    v1.include_router(audio.router)
    v1.include_router(chat.router)
    v1.include_router(completions.router)
    v1.include_router(models.router)
    v1.include_router(files.router)
    app.include_router(v1)
    app.include_router(health.router)
    app.include_router(tokenizer.router)
    return app
