"""Everything a request needs, built once in the app's lifespan and kept on `app.state.container`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oasis import __version__
from oasis.blobs import BlobStore, blob_store
from oasis.engines.base import EngineFactory
from oasis.engines.registry import EngineRegistry
from oasis.protocol import openapi_types as spec
from oasis.protocol.extensions import (
    ChatCompletionRequest,
    CompletionRequest,
    CreateImageRequest,
    CreateModerationRequest,
)
from oasis.sandbox.bubblewrap import Limits
from oasis.sandbox.sessions import SandboxPool
from oasis.services.assistants.assistants import AssistantService
from oasis.services.assistants.code_interpreter import CodeInterpreter
from oasis.services.assistants.file_search import FileSearch
from oasis.services.assistants.runs import RunService
from oasis.services.assistants.threads import ThreadService
from oasis.services.audio.service import AudioService
from oasis.services.batches.service import BatchService
from oasis.services.chat.completions import CompletionService
from oasis.services.chat.service import ChatService
from oasis.services.chat.spoken import SpokenAnswers
from oasis.services.chat.stored import StoredCompletions
from oasis.services.chat.tokenizer import TokenizerService
from oasis.services.containers import ContainerService
from oasis.services.embeddings.service import EmbeddingService
from oasis.services.files.service import FileService
from oasis.services.files.uploads import UploadService
from oasis.services.fine_tuning.service import FineTuningService
from oasis.services.images.links import ImageLinks
from oasis.services.images.service import ImageService
from oasis.services.keys import KeyService, ProjectKeys
from oasis.services.models.fine_tuned import FineTunedModels
from oasis.services.models.service import ModelService
from oasis.services.moderations.service import ModerationService
from oasis.services.monitoring import Monitoring
from oasis.services.rate_limits import RateLimiter
from oasis.services.responses.code_interpreter import session_key
from oasis.services.responses.conversations import ConversationService
from oasis.services.responses.prompts import Prompts
from oasis.services.responses.service import ResponseService
from oasis.services.vector_stores.search import VectorSearch
from oasis.services.vector_stores.service import VectorStoreService
from oasis.settings import ModelSpec, Settings
from oasis.storage.clock import now
from oasis.storage.db import Database
from oasis.storage.rate_buckets import MemoryBuckets, RateBuckets, RedisBuckets
from oasis.workers.batches import BatchCaller, BatchRunner, EndpointHandler
from oasis.workers.blob_sweeper import BlobSweeper
from oasis.workers.file_expiry import FileExpiry
from oasis.workers.fine_tuning import FineTuningRunner
from oasis.workers.ingestion import IngestionRunner
from oasis.workers.loop import WorkerLoop
from oasis.workers.responses import BackgroundResponses
from oasis.workers.runs import RunExecutor, RunRunner

log = logging.getLogger("oasis")

# How long shutting down waits for the worker loops to finish the job in hand before cancelling it.
STOP_SECONDS = 5.0


def _fingerprint() -> str:
    """Changes when the code that turns a request into tokens changes, as OpenAI's does with its backend."""
    return "fp_" + hashlib.sha256(f"oasis-{__version__}".encode()).hexdigest()[:10]


def _batch_endpoints(
    chat: ChatService,
    stored_chats: StoredCompletions,
    completions: CompletionService,
    embeddings: EmbeddingService,
    moderations: ModerationService,
    images: ImageService,
    fine_tuned: FineTunedModels,
    own_address: str,
) -> dict[str, EndpointHandler]:
    """A batch's requests go through the same services as the online endpoints, checked by the same models."""

    async def load(body: dict[str, Any], caller: BatchCaller) -> None:
        model = body.get("model")
        if isinstance(model, str):
            await fine_tuned.ensure(caller.project_id, model)

    async def chat_completion(body: dict[str, Any], caller: BatchCaller) -> dict[str, Any]:
        await load(body, caller)
        asked = ChatCompletionRequest.model_validate(body)
        stored_chats.check(asked)
        request = await chat.with_files_read(asked, caller.project_id)
        completion = await chat.create(request, project_id=caller.project_id)
        # stored as it was sent (its files named, not read into it), as the online endpoint stores it
        return await stored_chats.kept(caller.project_id, asked, completion, None, request_key=caller.request_key)

    async def completion(body: dict[str, Any], caller: BatchCaller) -> dict[str, Any]:
        await load(body, caller)
        return await completions.create(CompletionRequest.model_validate(body))

    async def embedding(body: dict[str, Any], _caller: BatchCaller) -> dict[str, Any]:
        return await embeddings.create(spec.CreateEmbeddingRequest.model_validate(body))

    async def moderation(body: dict[str, Any], _caller: BatchCaller) -> dict[str, Any]:
        request = CreateModerationRequest.model_validate(body)
        return await moderations.create(request.model_dump(mode="json", exclude_none=True))

    async def image_generation(body: dict[str, Any], caller: BatchCaller) -> dict[str, Any]:
        request = CreateImageRequest.model_validate(body)
        payload = request.model_dump(mode="json", exclude_none=True, exclude_unset=True)
        return await images.generate(payload, caller.project_id, caller.base_url or own_address)

    return {
        "/v1/chat/completions": chat_completion,
        "/v1/completions": completion,
        "/v1/embeddings": embedding,
        "/v1/moderations": moderation,
        "/v1/images/generations": image_generation,
    }


def _own_address(settings: Settings) -> str:
    """The address this server listens at, as a client on this host reaches it (a wildcard host: loopback)."""
    host = settings.server.host
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)
    return f"http://{host}:{settings.server.port}/"


def _rate_buckets(settings: Settings) -> RateBuckets:
    """Redis when configured, so that replicas count together; else this process's own."""
    if settings.redis_url is not None:
        return RedisBuckets(settings.redis_url.get_secret_value())
    return MemoryBuckets()


@dataclass
class Container:
    settings: Settings
    db: Database
    blobs: BlobStore
    registry: EngineRegistry
    keys: KeyService
    project_keys: ProjectKeys
    files: FileService
    uploads: UploadService
    models: ModelService
    chat: ChatService
    stored_chats: StoredCompletions
    responses: ResponseService
    conversations: ConversationService
    completions: CompletionService
    tokenizer: TokenizerService
    audio: AudioService
    embeddings: EmbeddingService
    moderations: ModerationService
    images: ImageService
    vector_stores: VectorStoreService
    search: VectorSearch
    ingestion: IngestionRunner
    batch_runner: BatchRunner
    sweeper: BlobSweeper
    batches: BatchService
    # Ingestion and the blob sweeper.
    worker: WorkerLoop
    # A batch runs for up to a day: batches have a loop of their own, so that files are still indexed (and
    # blobs swept) meanwhile.
    batch_loop: WorkerLoop
    assistants: AssistantService
    threads: ThreadService
    runs: RunService
    run_runner: RunRunner
    background_responses: BackgroundResponses
    # Runs and background responses are leased by a loop of their own: a long batch or ingestion must not hold up
    # an interactive run.
    run_worker_loop: WorkerLoop
    sandboxes: SandboxPool
    containers: ContainerService
    code_interpreter: CodeInterpreter
    monitoring: Monitoring
    rate_limits: RateLimiter
    fine_tuned: FineTunedModels
    fine_tuning: FineTuningService
    # Training takes minutes: fine-tuning jobs have a loop of their own, so batches and ingestion never wait on one.
    fine_tuning_loop: WorkerLoop

    @classmethod
    def build(cls, settings: Settings, specs: list[ModelSpec], factories: Mapping[str, EngineFactory]) -> Container:
        db = Database(settings.sqlalchemy_url)
        blobs = blob_store(settings)
        registry = EngineRegistry(specs, factories)
        embeddings = EmbeddingService(registry)
        files = FileService(db, blobs, settings.files.max_upload_bytes, settings.files.batch_expiry_seconds)
        # a judge model moderates through chat, and chat is moderated: chat is called once it is made below
        moderations = ModerationService(registry, embeddings, lambda request: chat.create(request))
        chat = ChatService(
            registry,
            fingerprint=_fingerprint(),
            files=files,
            spoken=SpokenAnswers(db, registry, settings.chat.speech_model, settings.chat.spoken_answer_seconds),
            transcription_model=settings.chat.audio_transcription_model,
            moderate=moderations,
        )
        completions = CompletionService(registry, fingerprint=_fingerprint())
        fine_tuned = FineTunedModels(
            db, blobs, registry, settings.data_dir / "models", settings.fine_tuning.max_loaded_models
        )
        ingestion = IngestionRunner(
            db, blobs, embeddings, settings.workers.lease_seconds, spool_dir=settings.data_dir / "tmp"
        )
        secret = settings.images.url_secret
        links = ImageLinks(blobs, secret.get_secret_value() if secret else None, settings.images.public_url)
        images = ImageService(registry, links)
        stored_chats = StoredCompletions(db)
        batch_runner = BatchRunner(
            db,
            blobs,
            files,
            _batch_endpoints(
                chat,
                stored_chats,
                completions,
                embeddings,
                moderations,
                images,
                fine_tuned,
                own_address=_own_address(settings),
            ),
            settings.workers.lease_seconds,
            concurrency=settings.workers.batch_concurrency,
        )
        sweeper = BlobSweeper(db, blobs, settings.workers.sweep_seconds, expiring=[links.sweep])
        worker = WorkerLoop([ingestion, sweeper, FileExpiry(files)], settings.workers.poll_seconds)
        batch_loop = WorkerLoop([batch_runner], settings.workers.poll_seconds)
        embedding_model = settings.vector_stores.embedding_model
        resolved = registry.resolve(embedding_model)
        vector_stores = VectorStoreService(
            db, resolved.id if resolved else embedding_model, worker.wake, files, spool_dir=settings.data_dir / "tmp"
        )
        lease_seconds = settings.workers.lease_seconds
        search = VectorSearch(
            db,
            vector_stores,
            embeddings,
            settings.vector_stores.index_threshold,
            cache_bytes=int(settings.vector_stores.search_cache_mb * (1 << 20)),
        )
        interpreter = settings.code_interpreter
        sandboxes = SandboxPool(
            Limits(
                call_seconds=interpreter.call_seconds,
                memory_mb=interpreter.memory_mb,
                cpu_seconds=interpreter.cpu_seconds,
                processes=interpreter.processes,
                file_mb=interpreter.file_mb,
                folder_mb=interpreter.folder_mb,
            ),
            max_sessions=interpreter.max_sessions,
            idle_seconds=interpreter.idle_seconds,
        )
        code = CodeInterpreter(db, files, sandboxes)

        async def end_session(project_id: str, container_id: str) -> None:
            await sandboxes.end(session_key(project_id, container_id))

        containers = ContainerService(
            db, blobs, files, interpreter.file_mb << 20, end_session, max_memory_mb=interpreter.max_memory_mb
        )
        rate_limits = RateLimiter(settings.rate_limits, db, _rate_buckets(settings))
        searcher = FileSearch(db, search)  # file_search's, in runs and in responses
        conversations = ConversationService(db)
        run_executor = RunExecutor(db, chat, searcher, code, lease_seconds, fine_tuned.ensure, rate_limits=rate_limits)
        run_runner = RunRunner(db, run_executor, lease_seconds, settings.workers.run_concurrency)
        responses = ResponseService(
            db,
            chat,
            fine_tuned.ensure,
            searcher,
            code,
            conversations,
            containers,
            files,
            images,
            wake_workers=lambda: run_worker_loop.wake(),
            mcp_server_urls=settings.responses.mcp_server_urls,
            rate_limits=rate_limits,
            prompts=Prompts(settings.responses.prompts),
        )
        background_responses = BackgroundResponses(
            db, responses, conversations, lease_seconds, settings.workers.response_concurrency
        )
        run_worker_loop = WorkerLoop([run_runner, background_responses], settings.workers.poll_seconds)
        run_runner.jobs.on_finished = run_worker_loop.wake  # a freed place takes the next waiting run at once
        background_responses.jobs.on_finished = run_worker_loop.wake
        fine_tuning_runner = FineTuningRunner(
            db,
            blobs,
            files,
            registry,
            fine_tuned,
            settings.fine_tuning,
            settings.data_dir / "fine_tuning",
            lease_seconds,
        )
        fine_tuning_loop = WorkerLoop([fine_tuning_runner], settings.workers.poll_seconds)
        return cls(
            settings=settings,
            db=db,
            blobs=blobs,
            registry=registry,
            keys=KeyService(db),
            project_keys=ProjectKeys(db),
            files=files,
            uploads=UploadService(db, blobs, files, settings.data_dir / "tmp"),
            models=ModelService(db, registry, started_at=now(), on_deleted=fine_tuned.forget),
            chat=chat,
            stored_chats=stored_chats,
            responses=responses,
            conversations=conversations,
            containers=containers,
            completions=completions,
            tokenizer=TokenizerService(registry),
            audio=AudioService(registry),
            embeddings=embeddings,
            moderations=moderations,
            images=images,
            vector_stores=vector_stores,
            search=search,
            ingestion=ingestion,
            batch_runner=batch_runner,
            sweeper=sweeper,
            batches=BatchService(db, batch_loop.wake),
            worker=worker,
            batch_loop=batch_loop,
            assistants=AssistantService(db, registry, vector_stores, fine_tuned.ensure),
            threads=ThreadService(db, vector_stores),
            runs=RunService(
                db,
                registry,
                vector_stores,
                code,
                execute=run_executor.execute,
                cancel_here=run_executor.cancel_here,
                wake_workers=run_worker_loop.wake,
                lease_seconds=lease_seconds,
                load_model=fine_tuned.ensure,
            ),
            run_runner=run_runner,
            background_responses=background_responses,
            run_worker_loop=run_worker_loop,
            sandboxes=sandboxes,
            code_interpreter=code,
            monitoring=Monitoring(registry, db),
            rate_limits=rate_limits,
            fine_tuned=fine_tuned,
            fine_tuning=FineTuningService(db, registry, fine_tuning_loop.wake),
            fine_tuning_loop=fine_tuning_loop,
        )

    async def start_engines(self) -> None:
        """Loads every configured model, each failing alone; `registry.settled` is set when all were tried."""
        await self.registry.start()

    async def run_worker(self) -> None:
        """The background job loop, once every model was tried: a job whose model failed fails with its reason,
        instead of every job waiting on a model that will never load."""
        await self.registry.settled.wait()
        await self.run_jobs()

    async def run_jobs(self) -> None:
        loops = {self.worker: asyncio.create_task(self.worker.run())}
        loops[self.batch_loop] = asyncio.create_task(self.batch_loop.run())
        loops[self.run_worker_loop] = asyncio.create_task(self.run_worker_loop.run())
        loops[self.fine_tuning_loop] = asyncio.create_task(self.fine_tuning_loop.run())
        try:
            # asyncio.wait, not gather: cancelling this task must not cancel the loops mid-query.
            done, _ = await asyncio.wait(loops.values(), return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for loop in loops:
                loop.stop()
            _, slow = await asyncio.wait(loops.values(), timeout=STOP_SECONDS)
            for task in slow:  # a job still going (a long batch): handed back, another worker resumes it
                task.cancel()
            await asyncio.gather(*loops.values(), return_exceptions=True)
            await self.run_runner.close()
            await self.background_responses.close()
            for loop in loops:
                await loop.hand_back()

    async def close(self) -> None:
        self.run_runner.stop()  # the streamed runs cut off below are cut off by a shutdown
        self.background_responses.stop()
        await self.runs.close()
        await self.sandboxes.close()
        await self.registry.close()
        await self.blobs.close()
        await self.rate_limits.close()
        await self.db.close()
