"""The fine-tuning API: create, list, retrieve, events, cancel, checkpoints. The job row is the job;
workers/fine_tuning.py validates its files and trains it."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from oasis.engines.llamacpp.weights import gguf_path
from oasis.engines.registry import EngineRegistry
from oasis.errors import invalid_request, most_telling, not_found
from oasis.protocol import openapi_types as spec
from oasis.protocol.extensions import MAX_FINE_TUNING_SUFFIX
from oasis.services.metadata import check_metadata
from oasis.settings import ModelSpec
from oasis.storage import files as file_rows
from oasis.storage import fine_tuning as job_rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database
from oasis.storage.pagination import Page, PageRequest
from oasis.storage.tables import UNFINISHED_STATUSES, FineTuningCheckpoint, FineTuningEvent, FineTuningJob

# Engine kinds whose weights oasis can train (a GGUF read by transformers) and serve again (the merged GGUF).
TRAINABLE_ENGINES = ("llamacpp",)
# A conditional change of a job's status (storage/fine_tuning.py): False when the job was not in the status it needs.
JobMove = Callable[[Any, FineTuningJob], Awaitable[bool]]
HYPERPARAMETERS = ("n_epochs", "batch_size", "learning_rate_multiplier")


def job_to_wire(row: FineTuningJob) -> dict[str, Any]:
    hyperparameters = json.loads(row.hyperparameters_json)
    return {
        "id": row.id,
        "object": "fine_tuning.job",
        "created_at": row.created_at,
        "error": json.loads(row.error_json) if row.error_json else None,
        "fine_tuned_model": row.fine_tuned_model,
        "finished_at": row.finished_at,
        "hyperparameters": hyperparameters,
        "method": {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},
        "model": row.model,
        "organization_id": row.project_id,
        "result_files": json.loads(row.result_files_json),
        "status": row.status,
        "trained_tokens": row.trained_tokens,
        "training_file": row.training_file,
        "validation_file": row.validation_file,
        "integrations": json.loads(row.integrations_json) if row.integrations_json else None,
        "seed": row.seed,
        "estimated_finish": row.estimated_finish if row.status == "running" else None,
        "metadata": json.loads(row.metadata_json) if row.metadata_json else None,
        "user_provided_suffix": row.suffix,
    }


def event_to_wire(row: FineTuningEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "fine_tuning.job.event",
        "created_at": row.created_at,
        "level": row.level,
        "message": row.message,
        "type": row.type,
        "data": json.loads(row.data_json) if row.data_json else {},
    }


def checkpoint_to_wire(row: FineTuningCheckpoint) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": row.created_at,
        "fine_tuned_model_checkpoint": row.fine_tuned_model_checkpoint,
        "step_number": row.step_number,
        "metrics": json.loads(row.metrics_json),
        "fine_tuning_job_id": row.job_id,
    }


def fine_tuned_model_name(base_model: str, project_id: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's shape, `ft:BASE:OWNER:SUFFIX:ID` (the suffix part empty when none was given)."""
    return f"ft:{base_model}:{project_id}:{suffix or ''}:{job_id[-8:]}"


def new_event(job_id: str, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> FineTuningEvent:
    return FineTuningEvent(
        id=new_id("ftevent-"),
        job_id=job_id,
        created_at=now(),
        level=level,
        message=message,
        type="metrics" if data is not None and "train_loss" in data else "message",
        data_json=json.dumps(data) if data is not None else None,
    )


def _training_problem(spec: ModelSpec) -> str | None:
    try:
        # gguf-py comes with the engines (the `all` extra): a replica installed without them still starts
        from oasis.engines.training.gguf_merge import training_problem
    except ImportError as exc:
        return f"this server is installed without the llama.cpp engine's tools ({exc}; install oasis[all])"
    try:
        weights = gguf_path(spec)
    except (OSError, ValueError) as exc:
        return f"its weights cannot be found ({exc})"
    return training_problem(weights, Path(spec.train_from).expanduser() if spec.train_from else None)


class FineTuningService:
    def __init__(self, db: Database, registry: EngineRegistry, wake_workers: Callable[[], None]) -> None:
        self._db = db
        self._registry = registry
        self._wake_workers = wake_workers

    async def create(self, project_id: str, request: dict[str, Any]) -> dict[str, Any]:
        model = request["model"]
        # Only configured models: a fine-tune is served only while loaded for its project, which a worker is not
        spec = self._registry.resolve(model) if self._registry.configured(model) else None
        if spec is None or spec.engine not in TRAINABLE_ENGINES:
            if spec is None and model.startswith("ft:"):
                why = "is a fine-tuned model, and fine-tuning here starts from a configured model"
            elif spec is None:
                why = "is not a model this server serves"
            else:
                why = f"is served by the '{spec.engine}' engine"
            raise invalid_request(
                f"Model {model} is not available for fine-tuning: it {why}; a GGUF model of the llamacpp engine "
                "can be fine-tuned.",
                param="model",
                code="model_not_available",
            )
        problem = await asyncio.to_thread(_training_problem, spec)
        if problem:
            raise invalid_request(
                f"Model {model} is not available for fine-tuning: {problem}.", param="model", code="model_not_available"
            )
        hyperparameters = _asked_hyperparameters(request)
        suffix = request.get("suffix")
        if suffix is not None and (len(suffix) > MAX_FINE_TUNING_SUFFIX or not suffix.strip()):
            raise invalid_request(
                f"'suffix' must be 1 to {MAX_FINE_TUNING_SUFFIX} characters; got {len(suffix)}.", param="suffix"
            )
        metadata = check_metadata(request.get("metadata")) if request.get("metadata") is not None else None
        integrations = request.get("integrations") or None
        seed = request.get("seed")
        if seed is None:
            seed = secrets.randbelow(2**31)
        async with self._db.session() as session:
            for param in ("training_file", "validation_file"):
                file_id = request.get(param)
                if file_id is None:
                    continue
                found = await file_rows.get_file(session, project_id, file_id)
                if found is None:
                    raise invalid_request(f"invalid {param}: {file_id} does not exist.", param=param)
                if found.purpose != "fine-tune":
                    raise invalid_request(
                        f"invalid {param}: {file_id} has purpose '{found.purpose}'; fine-tuning reads files of "
                        "purpose 'fine-tune'.",
                        param=param,
                    )
            job_id = new_id("ftjob-")
            row = FineTuningJob(
                id=job_id,
                project_id=project_id,
                created_at=now(),
                model=model,
                base_model=spec.id,
                training_file=request["training_file"],
                validation_file=request.get("validation_file"),
                hyperparameters_json=json.dumps(hyperparameters),
                suffix=suffix,
                seed=int(seed),
                integrations_json=json.dumps(integrations) if integrations else None,
                metadata_json=json.dumps(metadata) if metadata is not None else None,
                status="validating_files",
                result_files_json="[]",
                attempts=0,
            )
            session.add(row)
            session.add(new_event(job_id, f"Created fine-tuning job: {job_id}"))
            if integrations:
                session.add(
                    new_event(
                        job_id,
                        "Weights & Biases is not reached from this server (it runs offline): the integration is "
                        "kept on the job and skipped.",
                        level="warn",
                    )
                )
            await session.flush()
            # Read again, locked, after the job is written: a delete of a file that got in since the first read
            # answers here; one that comes later waits, then sees the job and keeps the bytes.
            named = {param: request[param] for param in ("training_file", "validation_file") if request.get(param)}
            live = await file_rows.existing_file_ids(session, project_id, list(named.values()), for_update=True)
            for param, file_id in named.items():
                if file_id not in live:
                    raise invalid_request(f"invalid {param}: {file_id} does not exist.", param=param)
            await session.commit()
        self._wake_workers()
        return job_to_wire(row)

    async def retrieve(self, project_id: str, job_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            return job_to_wire(await self._job(session, project_id, job_id))

    async def list_jobs(
        self, project_id: str, page: PageRequest, metadata: dict[str, str] | None = None
    ) -> Page[dict[str, Any]]:
        """A page of the project's jobs, newest first; with `metadata`, only jobs whose metadata holds every pair
        (an empty filter: jobs with no metadata)."""
        async with self._db.session() as session:
            found = await job_rows.list_jobs(session, project_id, page, metadata)
        return Page(items=[job_to_wire(row) for row in found.items], has_more=found.has_more)

    async def list_events(self, project_id: str, job_id: str, page: PageRequest) -> Page[dict[str, Any]]:
        async with self._db.session() as session:
            await self._job(session, project_id, job_id)
            found = await job_rows.list_events(session, job_id, page)
        return Page(items=[event_to_wire(row) for row in found.items], has_more=found.has_more)

    async def list_checkpoints(self, project_id: str, job_id: str, page: PageRequest) -> Page[dict[str, Any]]:
        async with self._db.session() as session:
            await self._job(session, project_id, job_id)
            found = await job_rows.list_checkpoints(session, job_id, page)
        return Page(items=[checkpoint_to_wire(row) for row in found.items], has_more=found.has_more)

    async def cancel(self, project_id: str, job_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            row = await self._job(session, project_id, job_id)
            if row.status not in UNFINISHED_STATUSES:
                raise invalid_request(
                    f"Job {job_id} has already {row.status}; only a job that is still validating, queued, running "
                    "or paused can be cancelled.",
                    param="fine_tuning_job_id",
                    code="job_not_cancellable",
                )
            was_paused = row.status == "paused"
            # The worker training it sees the status within a second, stops the trainer and keeps the checkpoints
            # written so far.
            if not await job_rows.cancel(session, row, now()):
                raise invalid_request(
                    f"Job {job_id} ended before it could be cancelled.",
                    param="fine_tuning_job_id",
                    code="job_not_cancellable",
                )
            if was_paused:  # no worker holds it to drop its saved state: the blob sweeper removes it, unnamed
                row.resume_blob_key = None
            session.add(new_event(job_id, "Fine-tuning job cancelled"))
            await session.commit()
            await session.refresh(row)
        self._wake_workers()
        return job_to_wire(row)

    async def pause(self, project_id: str, job_id: str) -> dict[str, Any]:
        """Stops a running job's training (newer SDKs' `pause`): its worker stops the trainer within a second; the
        steps since its last saved state are trained again on `resume`, and recorded once."""
        return await self._move(project_id, job_id, job_rows.pause, "running", "paused", "job_not_pausable")

    async def resume(self, project_id: str, job_id: str) -> dict[str, Any]:
        """Queues a paused job again; a worker trains on from its last saved state."""
        moved = await self._move(project_id, job_id, job_rows.resume, "paused", "resumed", "job_not_resumable")
        self._wake_workers()
        return moved

    async def _move(
        self, project_id: str, job_id: str, move: JobMove, needs: str, done: str, refusal: str
    ) -> dict[str, Any]:
        """`move` the job (`needs`: the status it must be in, else a 400 `refusal`), with the event that says it
        was `done`."""
        async with self._db.session() as session:
            row = await self._job(session, project_id, job_id)
            if not await move(session, row):
                raise invalid_request(
                    f"Job {job_id} is {row.status}; only a {needs} job can be {done}.",
                    param="fine_tuning_job_id",
                    code=refusal,
                )
            session.add(new_event(job_id, f"Fine-tuning job {done}"))
            await session.commit()
            await session.refresh(row)
        return job_to_wire(row)

    @staticmethod
    async def _job(session: Any, project_id: str, job_id: str) -> FineTuningJob:
        row = await job_rows.get_job(session, project_id, job_id)
        if row is None:
            raise not_found(f"Could not find fine-tuning job: {job_id}.", param="fine_tuning_job_id")
        return row


def metadata_filter(query: list[tuple[str, str]]) -> dict[str, str] | None:
    """`metadata[KEY]=VALUE` pairs of a list's query string; `metadata=null` asks for jobs without metadata ({})."""
    pairs: dict[str, str] = {}
    asked = False
    for name, value in query:
        if name == "metadata":
            if value != "null":
                raise invalid_request(
                    "Filter metadata with 'metadata[KEY]=VALUE', or 'metadata=null' for jobs without metadata.",
                    param="metadata",
                )
            asked = True
        elif name.startswith("metadata[") and name.endswith("]") and len(name) > len("metadata[]"):
            pairs[name[len("metadata[") : -1]] = value
            asked = True
    return pairs if asked else None


def _asked_hyperparameters(request: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters as asked, from `hyperparameters` or the newer `method.supervised.hyperparameters`."""
    method = request.get("method")
    asked = request.get("hyperparameters") or {}
    if method is not None:
        kind = method.get("type")
        if kind != "supervised":
            raise invalid_request(
                f"Only the 'supervised' fine-tuning method is available here; got '{kind}'.", param="method.type"
            )
        method_asked = (method.get("supervised") or {}).get("hyperparameters") or {}
        try:
            # the checked values, coerced as the top-level `hyperparameters` are ("4" is 4)
            method_asked = spec.Hyperparameters.model_validate(method_asked).model_dump(exclude_unset=True)
        except ValidationError as error:
            telling = most_telling(error.errors())
            field = ".".join(str(part) for part in telling["loc"][:1])
            raise invalid_request(
                f"Invalid hyperparameter {field}: {telling['msg']}.",
                param=f"method.supervised.hyperparameters.{field}",
            ) from None
        asked = {**asked, **method_asked}
    return {name: asked.get(name) if asked.get(name) is not None else "auto" for name in HYPERPARAMETERS}
