"""Trains one fine-tuning job: validates its files, runs the trainer as a subprocess (`python -m
oasis.engines.training JOB_DIR`, or the configured launcher) and commits what it reports step by step.

The job row is the job (DESIGN.md habit 8). The trainer saves its state every few steps; each saved state is
stored as a blob and named on the row, so a worker that dies (its trainer dies with it) is followed by one that
resumes from that state, on any host, and the steps it repeats are not recorded twice (resuming is exact: the
same seed, data order and random state give the same losses). Each epoch's end is a checkpoint: its adapter is
stored, and it is a model of its own. Cancelling or pausing sets the row's status; the worker sees it within a
second, stops the trainer and keeps the checkpoints so far (a paused job keeps its saved state too, for its resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import ctypes
import ctypes.util
import io
import json
import logging
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

from oasis.blobs import BlobNotFound, BlobStore
from oasis.engines.llamacpp.weights import gguf_path
from oasis.engines.registry import EngineRegistry
from oasis.metrics import JOB_DURATION
from oasis.services.files.service import FileService
from oasis.services.fine_tuning import hyperparameters
from oasis.services.fine_tuning.service import fine_tuned_model_name, new_event
from oasis.services.models.fine_tuned import FineTunedModels, pack, read_blob, unpack
from oasis.settings import FineTuningSettings
from oasis.storage import files as file_rows
from oasis.storage import fine_tuning as job_rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database
from oasis.storage.tables import TRAINING_STATUSES, FineTuningCheckpoint, FineTuningJob, OwnedModel
from oasis.workers.leases import JobClaims, LeaseKeeper

log = logging.getLogger("oasis.fine_tuning")

MIN_EXAMPLES = 10  # OpenAI's minimum for a training file
MAX_ATTEMPTS = 3  # leases of one job (each crash that takes it up again is one) before a recurring fault fails it
STOP_GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL when a cancelled trainer does not stop
_ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
EXIT_WAIT_SECONDS = 120.0  # for a trainer that reported everything to exit (the interpreter's teardown)
_LONGEST_REPORT = 16 << 20  # a report line (an error quoting a long example) may be long


class _Stop(Exception):
    """The job is no longer ours to train: cancelled, or its lease taken over."""


class _Failed(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.error = {"code": code, "message": message, "param": param}


class FineTuningRunner:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        files: FileService,
        registry: EngineRegistry,
        models: FineTunedModels,
        settings: FineTuningSettings,
        work_dir: Path,
        lease_seconds: float,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._files = files
        self._registry = registry
        self._models = models
        self._settings = settings
        self._work_dir = work_dir
        self._lease_seconds = lease_seconds
        self.claims = JobClaims(db, FineTuningJob, [FineTuningJob.status.in_(TRAINING_STATUSES)])

    async def run_next(self, owner: str) -> bool:
        seq = await self.claims.lease_one(owner=owner, seconds=self._lease_seconds)
        if seq is None:
            return False
        started = time.perf_counter()
        job = await self._job(seq)
        # Each attempt has a folder of its own (a worker that lost the lease may still be writing its own): named
        # afresh, since a checkpoint sets the attempts count back; what outlives an attempt is in the blobs.
        folder = self._work_dir / f"{job.id}-{uuid.uuid4().hex[:12]}"
        try:
            if job.attempts > MAX_ATTEMPTS:  # taken up again and again without progress (a crash each time)
                raise _Failed(
                    "server_error", f"Training stopped without progress {MAX_ATTEMPTS} times (see the worker's log)."
                )
            async with LeaseKeeper(self._db, FineTuningJob, seq, owner, self._lease_seconds):
                await self._run(job, owner, folder)
            outcome = (await self._job(seq)).status
        except asyncio.CancelledError:  # a shutdown, or a kill as the tests make one: the loop decides which
            self.claims.cut_off(seq)
            raise
        except _Stop:
            outcome = "stopped"
            await self._release(seq, owner)
        except _Failed as failure:
            outcome = "failed"
            await self._fail(seq, owner, failure.error)
        except Exception as exc:
            outcome = "error"
            log.exception("fine-tuning job %s failed", job.id)
            if (await self._job(seq)).attempts >= MAX_ATTEMPTS:
                message = f"Training failed {MAX_ATTEMPTS} times; the last error: {type(exc).__name__}: {exc}"
                await self._fail(seq, owner, {"code": "server_error", "message": message, "param": None})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            await self._drop_resume_state(seq)
        JOB_DURATION.labels("fine_tuning", outcome).observe(time.perf_counter() - started)
        return True

    # --- the row ------------------------------------------------------------------------------------------

    async def _job(self, seq: int) -> FineTuningJob:
        async with self._db.session() as session:
            job = await session.get(FineTuningJob, seq)
        assert job is not None
        return job

    async def _set(self, job: FineTuningJob, owner: str, statuses: tuple[str, ...], *rows: Any, **values: Any) -> None:
        """Writes `values` and new `rows` (events, checkpoints, the model) together, only while this worker holds
        the job in one of `statuses`."""
        async with self._db.session() as session:
            if not await job_rows.update_held(session, job.seq, owner, statuses, values):
                raise _Stop
            session.add_all(rows)
            await session.commit()

    async def _drop_resume_state(self, seq: int) -> None:
        """A job that ended (succeeded, failed, cancelled) no longer needs its saved training state."""
        async with self._db.session() as session:
            key = await job_rows.clear_resume_state(session, seq)
            await session.commit()
        if key is not None:
            await self._blobs.delete(key)

    async def _release(self, seq: int, owner: str) -> None:
        async with self._db.session() as session:
            await job_rows.release(session, seq, owner)
            await session.commit()

    async def _fail(self, seq: int, owner: str, error: dict[str, Any]) -> None:
        job = await self._job(seq)
        event = new_event(job.id, f"Fine-tuning job failed: {error['message']}", level="error")
        with contextlib.suppress(_Stop):
            await self._set(
                job,
                owner,
                TRAINING_STATUSES,
                event,
                status="failed",
                error_json=json.dumps(error),
                finished_at=now(),
                lease_owner=None,
                lease_expires_at=None,
            )

    # --- the job ------------------------------------------------------------------------------------------

    async def _run(self, job: FineTuningJob, owner: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        log.info("fine-tuning job %s: %s, attempt %s", job.id, job.status, job.attempts)
        training = await self._download(job.project_id, job.training_file, folder / "train.jsonl", "training_file")
        validation = None
        if job.validation_file:
            validation = await self._download(
                job.project_id, job.validation_file, folder / "validation.jsonl", "validation_file"
            )
        if job.status == "validating_files":
            await self._validate(job, owner, training)
            job = await self._job(job.seq)
        if job.status == "queued" and job.started_at is not None:  # resumed after a pause: it started before
            await self._set(job, owner, ("queued",), status="running")
            job = await self._job(job.seq)
        if job.status == "queued":
            await self._set(
                job,
                owner,
                ("queued",),
                new_event(job.id, "Fine-tuning job started"),
                status="running",
                started_at=now(),
            )
            job = await self._job(job.seq)
        if job.status == "running":
            await self._train(job, owner, folder, training, validation)

    async def _download(self, project_id: str, file_id: str, target: Path, param: str) -> Path:
        async with self._db.session() as session:
            row = await file_rows.get_file_by_id(session, file_id, deleted_too=True)
        if row is None or row.project_id != project_id:
            raise _Failed(f"invalid_{param}", f"The file {file_id} does not exist.", param)
        try:
            with target.open("wb") as copy:  # piece by piece: a training file may be hundreds of megabytes
                async for piece in self._blobs.read(row.blob_key):
                    await asyncio.to_thread(copy.write, piece)
        except BlobNotFound:
            raise _Failed(f"invalid_{param}", f"The content of {file_id} is missing.", param) from None
        return target

    async def _validate(self, job: FineTuningJob, owner: str, training: Path) -> None:
        examples = await asyncio.to_thread(_count_examples, training)
        if examples < MIN_EXAMPLES:
            raise _Failed(
                "invalid_training_file",
                f"The training file has {examples} example(s); fine-tuning needs at least {MIN_EXAMPLES}.",
                "training_file",
            )
        chosen = hyperparameters.resolve(json.loads(job.hyperparameters_json), examples)
        await self._set(
            job,
            owner,
            ("validating_files",),
            new_event(job.id, f"Validating training file: {job.training_file}"),
            new_event(job.id, "Files validated, moving job to queued state"),
            status="queued",
            hyperparameters_json=json.dumps(chosen.to_wire()),
        )

    async def _train(
        self, job: FineTuningJob, owner: str, folder: Path, training: Path, validation: Path | None
    ) -> None:
        base = self._registry.resolve(job.base_model)
        if base is None:
            raise _Failed("model_not_available", f"The base model {job.base_model} is no longer served.", "model")
        chosen = hyperparameters.Hyperparameters(**json.loads(job.hyperparameters_json))
        resume_from = None
        if job.resume_blob_key:
            resume_from = folder / f"resume-step-{job.resume_step}"
            await asyncio.to_thread(unpack, await read_blob(self._blobs, job.resume_blob_key), resume_from)
        settings = self._settings
        (folder / "job.json").write_text(
            json.dumps(
                {
                    "base_gguf": str(gguf_path(base)),
                    "train_from": str(Path(base.train_from).expanduser()) if base.train_from else None,
                    "chat_template": base.options.get("chat_template"),
                    "training_file": str(training),
                    "validation_file": str(validation) if validation else None,
                    "n_epochs": chosen.n_epochs,
                    "batch_size": chosen.batch_size,
                    "learning_rate": chosen.learning_rate,
                    "seed": job.seed,
                    "threads": settings.threads or os.cpu_count() or 1,
                    "resume_from": str(resume_from) if resume_from else None,
                    "checkpoint_every": settings.checkpoint_every,
                    "max_length": settings.max_length,
                    "lora_rank": 8,
                }
            )
        )
        async with self._db.session() as session:
            recorded = await job_rows.last_recorded_step(session, job.id)
        progress = _Progress(recorded_step=recorded)
        command = [*(settings.launcher or [sys.executable]), "-m", "oasis.engines.training", str(folder)]
        reports = _trainer_reports(command, folder, lambda: self._still_running(job.seq, owner))
        async with contextlib.aclosing(reports):  # an error recording a report stops the trainer too
            async for report in reports:
                await self._record(job, owner, report, progress)
        if not progress.done:
            raise RuntimeError(f"the trainer stopped without finishing: {_log_tail(folder)}")
        await self._finish(await self._job(job.seq), owner, progress)

    async def _still_running(self, seq: int, owner: str) -> bool:
        """Whether this worker should go on training: the job is running and the lease still its own."""
        try:
            job = await self._job(seq)
        except Exception:  # a database hiccup: ask again at the next report, well before the lease lapses
            log.warning("checking fine-tuning job row %s failed", seq)
            return True
        return job.status == "running" and job.lease_owner == owner

    async def _record(self, job: FineTuningJob, owner: str, report: dict[str, Any], progress: _Progress) -> None:
        kind = report.get("event")
        if kind == "error":
            param = report.get("param") or (
                "validation_file" if report.get("code") == "invalid_validation_file" else "training_file"
            )
            raise _Failed(str(report.get("code") or "invalid_training_file"), str(report.get("message")), param)
        if kind == "started":
            progress.total_steps = int(report["total_steps"])
            progress.steps_per_epoch = int(report["steps_per_epoch"])
            progress.started = time.time()
            progress.started_step = int(report.get("resumed_at") or 0)
            events = []
            if progress.started_step:
                events.append(new_event(job.id, f"Training resumed from step {progress.started_step}"))
            progress.trained_tokens = int(report["trained_tokens"])
            await self._set(job, owner, ("running",), *events, total_steps=progress.total_steps)
        elif kind == "step":
            step = int(report["step"])
            if step <= progress.recorded_step:
                return  # recorded before the crash this run resumes from
            metrics = {name: report[name] for name in _METRICS if report.get(name) is not None}
            data = {"step": step, "total_steps": progress.total_steps, **metrics}
            message = f"Step {step}/{progress.total_steps}: training loss={report['train_loss']:.4f}"
            if "valid_loss" in metrics:
                message += f", validation loss={metrics['valid_loss']:.4f}"
            done_steps = step - progress.started_step
            estimate = progress.started + (time.time() - progress.started) / done_steps * (
                progress.total_steps - progress.started_step
            )
            await self._set(
                job, owner, ("running",), new_event(job.id, message, data=data), estimated_finish=int(estimate)
            )
            progress.recorded_step = step
        elif kind == "checkpoint":
            await self._checkpoint(job, owner, report, progress)
        elif kind == "done":
            progress.done = True

    async def _checkpoint(self, job: FineTuningJob, owner: str, report: dict[str, Any], progress: _Progress) -> None:
        step = int(report["step"])
        saved = Path(str(report["path"]))
        state_key = f"models/{job.id}/state-step-{step}.tar"
        await self._blobs.put(state_key, _chunks(await asyncio.to_thread(pack, saved)))
        events: list[Any] = []
        epoch_end = step % progress.steps_per_epoch == 0 or step == progress.total_steps
        async with self._db.session() as session:
            known = {row.step_number for row in await job_rows.checkpoints(session, job.id)}
        if epoch_end and step not in known:
            adapter_key = f"models/{job.id}/ckpt-step-{step}.tar"
            await self._blobs.put(adapter_key, _chunks(await asyncio.to_thread(pack, saved, _ADAPTER_FILES)))
            name = fine_tuned_model_name(job.base_model, job.project_id, job.suffix, job.id)
            metrics = {
                "step": step,
                **{key: value for key, value in report.get("metrics", {}).items() if key != "step"},
            }
            if "valid_loss" in metrics:  # scored on the whole validation set: OpenAI's full-validation figures
                metrics["full_valid_loss"] = metrics["valid_loss"]
                metrics["full_valid_mean_token_accuracy"] = metrics.get("valid_mean_token_accuracy")
            events.append(
                FineTuningCheckpoint(
                    id=new_id("ftckpt_"),
                    job_id=job.id,
                    project_id=job.project_id,
                    created_at=now(),
                    fine_tuned_model_checkpoint=f"{name}:ckpt-step-{step}",
                    step_number=step,
                    metrics_json=json.dumps(metrics),
                    adapter_blob_key=adapter_key,
                )
            )
            events.append(new_event(job.id, f"Checkpoint created at step {step}"))
        previous = job.resume_blob_key
        # Progress made: the leases counted so far were not a fault repeating itself.
        await self._set(job, owner, ("running",), *events, resume_step=step, resume_blob_key=state_key, attempts=0)
        job.resume_blob_key, job.resume_step = state_key, step
        if previous and previous != state_key:
            await self._blobs.delete(previous)

    async def _finish(self, job: FineTuningJob, owner: str, progress: _Progress) -> None:
        async with self._db.session() as session:
            checkpoints = await job_rows.checkpoints(session, job.id)
            metrics = await job_rows.metric_events(session, job.id)
        final = max(checkpoints, key=lambda row: row.step_number)
        base = self._registry.resolve(job.base_model)
        assert base is not None
        try:  # merging now proves the result can be served, and leaves it ready in this host's cache
            await self._models.merged_gguf(final.adapter_blob_key, base)
        except ValueError as exc:
            raise _Failed("unsupported_model", f"The trained adapter cannot be merged into the model: {exc}") from exc
        results = await self._files.store_once(
            job.project_id,
            purpose="fine-tune-results",
            filename="step_metrics.csv",
            chunks=_chunks(_results_csv(metrics)),
            file_id=f"file-{job.id.removeprefix('ftjob-')}",
        )
        name = fine_tuned_model_name(job.base_model, job.project_id, job.suffix, job.id)
        model = OwnedModel(
            id=name,
            project_id=job.project_id,
            created_at=now(),
            owned_by=job.project_id,
            base_model=job.base_model,
            artifact_blob_key=final.adapter_blob_key,
        )
        await self._set(
            job,
            owner,
            ("running",),
            model,
            new_event(job.id, f"New fine-tuned model created: {name}"),
            new_event(job.id, "The job has successfully completed"),
            status="succeeded",
            fine_tuned_model=name,
            trained_tokens=progress.trained_tokens,
            finished_at=now(),
            result_files_json=json.dumps([results.id]),
            lease_owner=None,
            lease_expires_at=None,
        )


_METRICS = ("train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")


class _Progress:
    def __init__(self, recorded_step: int) -> None:
        self.recorded_step = recorded_step
        self.total_steps = 0
        self.steps_per_epoch = 1
        self.started = time.time()
        self.started_step = 0
        self.trained_tokens = 0
        self.done = False


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _results_csv(events: list[Any]) -> bytes:
    """OpenAI's result file: a row of metrics per step."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"])
    for event in events:
        data = json.loads(event.data_json or "{}")
        writer.writerow(
            [
                data.get("step"),
                data.get("train_loss"),
                data.get("train_mean_token_accuracy"),
                data.get("valid_loss", ""),
                data.get("valid_mean_token_accuracy", ""),
            ]
        )
    return out.getvalue().encode()


def _log_tail(folder: Path, lines: int = 5) -> str:
    try:
        text = (folder / "trainer.log").read_text(errors="replace")
    except OSError:
        return "no log"
    return " | ".join(text.strip().splitlines()[-lines:]) or "no log"


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


_LIBC = _libc()  # loaded here, not in the forked child: loading a library there can deadlock a threaded parent
_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Any:
    """The trainer is killed with its worker (Linux): a worker killed by SIGKILL leaves no trainer behind."""

    def in_child() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the worker died before the call above
            os._exit(1)

    return in_child


async def _trainer_reports(
    command: list[str], folder: Path, still_running: Any, poll_seconds: float = 1.0
) -> AsyncGenerator[dict[str, Any]]:
    """The trainer's JSON lines as it writes them; stops it (SIGTERM, then SIGKILL) and raises _Stop once the job
    is no longer running (cancelled, or taken over)."""
    with (folder / "trainer.log").open("ab") as trainer_log:
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=trainer_log,
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent(os.getpid()),
            start_new_session=True,  # a launcher's children (torchrun's workers) are stopped with it, as a group
            limit=_LONGEST_REPORT,
        )
    assert process.stdout is not None
    stopped = finished = False
    try:
        while True:
            try:
                line = await asyncio.wait_for(process.stdout.readline(), timeout=poll_seconds)
            except TimeoutError:
                if not await still_running():
                    stopped = True
                    break
                continue
            if not line:  # the trainer is done writing: let it exit on its own before anything is signalled
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), timeout=EXIT_WAIT_SECONDS)
                break
            try:
                report = json.loads(line)
            except json.JSONDecodeError:
                log.warning("the trainer wrote a line that is not JSON: %r", line[:200])
                continue
            finished = finished or report.get("event") == "done"
            yield report
            if report.get("event") == "step" and not await still_running():
                stopped = True
                break
    finally:
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=STOP_GRACE_SECONDS)
            except TimeoutError:
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
    if stopped:
        raise _Stop
    if not finished and process.returncode not in (0, 2):  # 2: the trainer reported bad input as an error line
        tail = _log_tail(folder)
        if "No module named" in tail:
            raise _Failed(
                "training_unavailable",
                "The trainer's Python lacks torch, transformers or peft: install oasis's `train` extra there, or "
                f"point `fine_tuning.launcher` at a Python that has it ({tail}).",
            )
        raise RuntimeError(f"the trainer exited with {process.returncode}: {tail}")


def _count_examples(path: Path) -> int:
    """The file's non-blank lines, read a line at a time."""
    with path.open("rb") as lines:
        return sum(1 for line in lines if line.strip())
