"""Runs one batch: validates its input file, pushes each line through the same services as the online
endpoints, commits every result with the batch's counters, and writes the output and error files.

A result row per input line (unique per batch and line) is the progress: a batch taken over after a crash runs
only the lines without one, so every custom_id is answered exactly once. The output and error files are built
from those rows under ids fixed by the batch, so finishing twice (a crash before the batch is marked) stores
them once. The input is streamed line by line, never held whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from oasis.blobs import BlobNotFound, BlobStore
from oasis.engines.registry import serve_for_project
from oasis.engines.text import background_work
from oasis.errors import OasisError, invalid_fields, invalid_request
from oasis.metrics import JOB_DURATION
from oasis.protocol import json_depth, json_numbers
from oasis.protocol.lone_surrogates import lone_surrogate_message, path_in
from oasis.services.files.checks import MAX_BATCH_REQUESTS, storable_custom_id
from oasis.services.files.service import FileService
from oasis.storage import batches as batch_rows
from oasis.storage import files as file_rows
from oasis.storage.batches import RUNNING
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database
from oasis.storage.tables import BatchJob, BatchResult
from oasis.workers.leases import JobClaims, LeaseKeeper

log = logging.getLogger("oasis.batches")


@dataclass(frozen=True)
class BatchCaller:
    """Who a batch's requests are answered for: its project, and the address its creator reached oasis at (the
    base of links in the answers, such as generated images' URLs); `request_key` names the line's request, the
    same each time it is made (a crash makes it again), so what it stores (`store: true`) is stored once."""

    project_id: str
    base_url: str | None
    request_key: str = ""


# One request of a batch: a JSON body in, (status code, JSON body) out.
EndpointHandler = Callable[[dict[str, Any], BatchCaller], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class _Line:
    number: int  # 1-based, as OpenAI reports lines
    custom_id: str
    body: dict[str, Any]


class _Stop(Exception):
    """The batch is no longer ours to run as it was: cancelled, or its lease taken over."""


class _InputGone(Exception):
    """The input file's bytes are missing from the blob store."""


# Errors listed on a failed batch; the rest are counted in the last entry, so a bad file cannot bloat the row.
MAX_LISTED_ERRORS = 1000
RESULTS_PAGE = 500


# Leases of one batch (each crash or restart that takes it up again is one) before a recurring fault fails it.
MAX_ATTEMPTS = 5


class BatchRunner:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        files: FileService,
        endpoints: dict[str, EndpointHandler],
        lease_seconds: float,
        concurrency: int = 8,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._files = files
        self._endpoints = endpoints
        self._lease_seconds = lease_seconds
        self._concurrency = concurrency
        self.claims = JobClaims(db, BatchJob, [BatchJob.status.in_(RUNNING)])

    async def run_next(self, owner: str) -> bool:
        seq = await self.claims.lease_one(owner=owner, seconds=self._lease_seconds)
        if seq is None:
            return False
        started = time.perf_counter()
        try:
            async with LeaseKeeper(self._db, BatchJob, seq, owner, self._lease_seconds):
                await self._run(seq, owner)
            outcome = (await self._batch(seq)).status  # completed, failed, cancelled or expired
        except asyncio.CancelledError:  # a shutdown, or a kill as the tests make one: the loop decides which
            self.claims.cut_off(seq)
            raise
        except _Stop:
            outcome = "stopped"
            await self._release(seq, owner)  # cancelled meanwhile: the next round finalises it at once
        except Exception as exc:
            outcome = "error"
            log.exception("running batch (row %s) failed", seq)
            await self._fail_if_exhausted(seq, owner, exc)
        JOB_DURATION.labels("batch", outcome).observe(time.perf_counter() - started)
        return True

    async def _fail_if_exhausted(self, seq: int, owner: str, exc: Exception) -> None:
        """Below MAX_ATTEMPTS leases the batch waits for its lease to lapse and is taken up again (its results
        so far are kept); at the limit, a fault that keeps coming back fails it instead of looping forever."""
        async with self._db.session() as session:
            job = await session.get(BatchJob, seq)
            attempts = job.attempts if job is not None else 0
        if attempts < MAX_ATTEMPTS:
            return
        await self._give_up(
            seq, owner, f"The batch failed {attempts} times; the last error: {type(exc).__name__}: {exc}"
        )

    async def _give_up(self, seq: int, owner: str, message: str) -> None:
        """Fails the batch with a server_error, keeping the results it has in its output and error files (or,
        when even those cannot be written, failing it without them)."""
        error = {"code": "server_error", "message": message, "param": None, "line": None}
        try:
            await self._fail(await self._batch(seq), owner, [error])
            return
        except _Stop:
            return
        except Exception:
            log.exception("writing the results of failed batch (row %s) failed", seq)
        with contextlib.suppress(_Stop):
            await self._set(
                seq,
                owner,
                RUNNING,
                status="failed",
                failed_at=now(),
                errors_json=json.dumps({"object": "list", "data": [error]}),
                lease_owner=None,
                lease_expires_at=None,
            )

    async def _release(self, seq: int, owner: str) -> None:
        async with self._db.session() as session:
            await batch_rows.update_held(session, seq, owner, RUNNING, {"lease_owner": None, "lease_expires_at": None})
            await session.commit()

    async def _run(self, seq: int, owner: str) -> None:
        batch = await self._batch(seq)
        serve_for_project(batch.project_id)  # its lines may name the project's fine-tunes, and no other's
        log.info("batch %s: %s, attempt %s", batch.id, batch.status, batch.attempts)
        if batch.attempts > MAX_ATTEMPTS and batch.status in ("validating", "in_progress"):
            # Leased again and again without a result stored in between: each time the process ended (a crash,
            # a kill for memory) rather than raise, so no error handler counted it. A request that brings the
            # worker down must not do so for ever.
            await self._give_up(
                seq,
                owner,
                f"The worker stopped {batch.attempts - 1} times while running this batch without storing a result.",
            )
            return
        try:
            if batch.status == "validating":
                errors, total, model = await self._validate(batch)
                if errors:
                    await self._fail(batch, owner, errors)
                    return
                values = {"status": "in_progress", "in_progress_at": now(), "total": total, "model": model}
                await self._set(seq, owner, ("validating",), **values)
                batch = await self._batch(seq)
            if batch.status == "in_progress":
                if now() < batch.expires_at:
                    await self._run_lines(batch, owner)
                batch = await self._batch(seq)
            if batch.status == "in_progress":
                await self._set(seq, owner, ("in_progress",), status="finalizing", finalizing_at=now())
                batch = await self._batch(seq)
            if batch.status in ("finalizing", "cancelling"):
                await self._finalize(batch, owner)
        except _InputGone:
            gone = {"code": "invalid_file", "message": "The input file's content is missing.", "param": None}
            await self._fail(await self._batch(seq), owner, [{**gone, "line": None}])

    # --- input --------------------------------------------------------------------------------------------

    async def _raw_lines(self, batch: BatchJob) -> AsyncIterator[tuple[int, bytes]]:
        """The input file's lines (1-based numbers), streamed. A file deleted after the batch was created is still
        read: its bytes are kept while the batch runs, as OpenAI keeps a batch's input."""
        async with self._db.session() as session:
            source = await file_rows.get_file_by_id(session, batch.input_file_id, deleted_too=True)
        if source is None:
            raise _InputGone
        number = 0
        pending: list[bytes] = []  # the current line's pieces: a long line is joined once, not per read
        try:
            async for piece in self._blobs.read(source.blob_key):
                *complete, rest = piece.split(b"\n")
                for part in complete:
                    number += 1
                    yield number, b"".join([*pending, part])
                    pending = []
                pending.append(rest)
        except BlobNotFound:
            raise _InputGone from None
        if any(pending):
            yield number + 1, b"".join(pending)

    async def _lines(self, batch: BatchJob) -> AsyncIterator[tuple[int, _Line | None, dict[str, Any] | None]]:
        """Each non-blank line parsed: (number, the request or None, the problem or None)."""
        seen: set[str] = set()
        async for number, raw in self._raw_lines(batch):
            if not raw.strip():
                continue
            line, problem = _parse(number, raw, batch.endpoint, seen)
            yield number, line, problem

    async def _validate(self, batch: BatchJob) -> tuple[list[dict[str, Any]], int, str | None]:
        """The file's problems (each with its line), its requests' count, and the model every request asks for,
        named as they name it, as their answers do (None when they ask for several)."""
        errors: list[dict[str, Any]] = []
        total = unlisted = 0
        models: set[Any] = set()
        async for number, line, problem in self._lines(batch):
            if line is not None and total == MAX_BATCH_REQUESTS:  # a file stored before uploads were held to it
                line, problem = (
                    None,
                    _problem("invalid_request", f"A batch takes at most {MAX_BATCH_REQUESTS:,} requests."),
                )
            if line is not None:
                total += 1
                if len(models) < 2:
                    models.add(line.body.get("model"))
            elif len(errors) < MAX_LISTED_ERRORS - 1:
                errors.append({**(problem or {}), "line": number})
            else:
                unlisted += 1
        if unlisted:
            message = f"{unlisted} more line{'s' if unlisted > 1 else ''} with problems, not listed."
            errors.append({**_problem("invalid_request", message), "line": None})
        if not total and not errors:
            errors.append({**_problem("empty_file", "The input file has no requests."), "line": None})
        model = next(iter(models)) if len(models) == 1 else None
        return errors, total, model if isinstance(model, str) else None

    # --- running ------------------------------------------------------------------------------------------

    async def _run_lines(self, batch: BatchJob, owner: str) -> None:
        async with self._db.session() as session:
            done = await batch_rows.answered_lines(session, batch.seq)
        endpoint = self._endpoints[batch.endpoint]

        # Bounded: the reader stays a few lines ahead of the requests in flight, whatever the file's size.
        queue: asyncio.Queue[_Line | None] = asyncio.Queue(maxsize=self._concurrency * 2)
        # Set when a result finds the batch cancelling: no new request starts; those in flight finish and are kept.
        cancelling = asyncio.Event()

        async def read() -> None:
            async for _, line, _ in self._lines(batch):
                if cancelling.is_set():
                    break
                if line is not None and line.number not in done:
                    await queue.put(line)
            for _ in range(self._concurrency):
                await queue.put(None)

        async def work() -> None:
            background_work.set(True)  # this task's engine requests queue behind online ones
            while (line := await queue.get()) is not None:
                if cancelling.is_set() or now() >= batch.expires_at:
                    continue  # drain the queue so the reader finishes; these lines are cancelled or expire
                caller = BatchCaller(batch.project_id, batch.base_url, f"{batch.id}/{line.number}")

                async def handler(body: dict[str, Any], caller: BatchCaller = caller) -> dict[str, Any]:
                    return await endpoint(body, caller)

                status_code, body = await self._call(handler, line.body)
                if not await self._record(batch, owner, line, status_code, body):
                    cancelling.set()

        tasks = [asyncio.create_task(read()), *(asyncio.create_task(work()) for _ in range(self._concurrency))]
        try:
            # The first fault anywhere (a cancel seen by a worker, a vanished input) stops the reader and the workers:
            # none is left waiting on a queue that nobody serves any more.
            finished, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in finished:
                if (fault := task.exception()) is not None:
                    raise fault
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _call(
        handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        if body.get("stream"):
            failure = OasisError(
                400, "Streaming is not supported in the Batch API.", param="stream", code="streaming_unsupported"
            )
            return failure.status, _envelope(failure)
        refusal = _refusal(body)
        if refusal is not None:  # what the online endpoint answers (the middleware refuses such a body)
            return refusal.status, _envelope(refusal)
        while True:
            try:
                return 200, await handler(body)
            except ValidationError as exc:
                failure = invalid_fields(exc.errors())
            except OasisError as exc:
                if exc.status == 429:
                    # The engine's queue is full of online work: a batch waits its turn instead of failing.
                    await asyncio.sleep(float(exc.headers.get("retry-after", 1)))
                    continue
                failure = exc
            except Exception:
                # What the online endpoint would answer with a 500: this request fails, the batch goes on.
                log.exception("a batch request failed")
                failure = OasisError(500, "The server had an error while processing this request.", type="server_error")
            return failure.status, _envelope(failure)

    async def _record(self, batch: BatchJob, owner: str, line: _Line, status_code: int, body: dict[str, Any]) -> bool:
        """Stores one result with the counters; False when the batch is being cancelled (the result is kept, as
        OpenAI keeps the requests in flight at a cancel)."""
        ok = status_code == 200
        counters: dict[str, Any] = {
            "completed": BatchJob.completed + (1 if ok else 0),
            "failed": BatchJob.failed + (0 if ok else 1),
            "attempts": 1,  # progress: the leases that came before count no more towards giving up
        }
        if ok:
            for name, tokens in _tokens_used(body).items():
                counters[name] = getattr(BatchJob, name) + tokens
        running = True
        async with self._db.session() as session:
            if not await batch_rows.update_held(session, batch.seq, owner, ("in_progress",), counters):
                running = False
                if not await batch_rows.update_held(session, batch.seq, owner, ("cancelling",), counters):
                    await session.rollback()
                    raise _Stop  # the lease was lost, or the batch was deleted
            session.add(
                BatchResult(
                    id=new_id("batch_req_"),
                    batch_seq=batch.seq,
                    line=line.number,
                    custom_id=line.custom_id,
                    ok=ok,
                    status_code=status_code,
                    request_id=new_id("req_"),
                    body_json=json.dumps(body),
                )
            )
            await session.commit()
        return running

    # --- output -------------------------------------------------------------------------------------------

    async def _finalize(self, batch: BatchJob, owner: str) -> None:
        async with self._db.session() as session:
            succeeded, failed = await batch_rows.result_counts(session, batch.seq)
        # A cancelled batch reports what finished; otherwise a line without a result ran out of time.
        expired = 0 if batch.status == "cancelling" else max(batch.total - succeeded - failed, 0)
        output_file_id = await self._write(batch, "output", self._records(batch, ok=True)) if succeeded else None
        error_file_id = None
        if failed or expired:
            error_file_id = await self._write(batch, "errors", self._failure_records(batch, with_expired=bool(expired)))
        stamp = now()
        final: dict[str, Any]
        if batch.status == "cancelling":
            final = {"status": "cancelled", "cancelled_at": stamp}
        elif expired:
            final = {"status": "expired", "expired_at": stamp, "failed": BatchJob.failed + expired}
        else:
            final = {"status": "completed", "completed_at": stamp}
        await self._set(
            batch.seq,
            owner,
            (batch.status,),
            output_file_id=output_file_id,
            error_file_id=error_file_id,
            lease_owner=None,
            lease_expires_at=None,
            **final,
        )
        log.info("batch %s: %s", batch.id, final["status"])

    async def _fail(self, batch: BatchJob, owner: str, errors: list[dict[str, Any]]) -> None:
        """Fails the batch, keeping the results it already has in its output and error files."""
        async with self._db.session() as session:
            succeeded, failed = await batch_rows.result_counts(session, batch.seq)
        output_file_id = await self._write(batch, "output", self._records(batch, ok=True)) if succeeded else None
        error_file_id = await self._write(batch, "errors", self._records(batch, ok=False)) if failed else None
        await self._set(
            batch.seq,
            owner,
            (batch.status,),
            status="failed",
            failed_at=now(),
            errors_json=json.dumps({"object": "list", "data": errors}),
            output_file_id=output_file_id,
            error_file_id=error_file_id,
            lease_owner=None,
            lease_expires_at=None,
        )
        log.info("batch %s: failed (%s)", batch.id, errors[0]["message"])

    async def _records(self, batch: BatchJob, *, ok: bool) -> AsyncIterator[tuple[int, str]]:
        """Stored results in line order, as (line, output record)."""
        after = 0
        while True:
            async with self._db.session() as session:
                page = await batch_rows.results_after(session, batch.seq, ok=ok, after_line=after, limit=RESULTS_PAGE)
            for result in page:
                yield result.line, _result_record(result)
            if len(page) < RESULTS_PAGE:
                return
            after = page[-1].line

    async def _failure_records(self, batch: BatchJob, *, with_expired: bool) -> AsyncIterator[tuple[int, str]]:
        """Failed results, and (past the window) a batch_expired record for each line that never ran, in line
        order."""
        if not with_expired:
            async for record in self._records(batch, ok=False):
                yield record
            return
        async with self._db.session() as session:
            answered = await batch_rows.answered_lines(session, batch.seq)
        failures = self._records(batch, ok=False)
        failure = await anext(failures, None)
        async for number, line, _ in self._lines(batch):
            while failure is not None and failure[0] <= number:
                yield failure
                failure = await anext(failures, None)
            if line is not None and number not in answered:
                yield number, _expired_record(line.custom_id)
        while failure is not None:
            yield failure
            failure = await anext(failures, None)

    async def _write(self, batch: BatchJob, kind: str, records: AsyncIterator[tuple[int, str]]) -> str:
        async def chunks() -> AsyncIterator[bytes]:
            async for _, record in records:
                yield (record + "\n").encode()

        stored = await self._files.store_once(
            batch.project_id,
            purpose="batch_output",
            filename=f"{batch.id}_{kind}.jsonl",
            chunks=chunks(),
            file_id=_output_file_id(batch, kind),
            expires_after=batch.output_expires_after,
        )
        return stored.id

    # --- rows ---------------------------------------------------------------------------------------------

    async def _batch(self, seq: int) -> BatchJob:
        async with self._db.session() as session:
            batch = await session.get(BatchJob, seq)
        if batch is None:
            raise _Stop
        return batch

    async def _set(self, seq: int, owner: str, statuses: tuple[str, ...], **values: Any) -> None:
        """Writes `values` while this worker holds the lease and the batch is in one of `statuses`."""
        async with self._db.session() as session:
            if not await batch_rows.update_held(session, seq, owner, statuses, values):
                await session.rollback()
                raise _Stop
            await session.commit()


def _refusal(body: dict[str, Any]) -> OasisError | None:
    """The 400 the online endpoint's middleware gives a body it refuses before any route reads it: a lone
    surrogate, NaN or an infinite number, nesting past json_depth.MAX_DEPTH."""
    where = path_in(body)
    if where is not None:
        return invalid_request(lone_surrogate_message(where), param=where or None)
    try:
        encoded = json.dumps(body, allow_nan=False).encode()
    except ValueError:
        return invalid_request(json_numbers.MESSAGE)
    except RecursionError:
        return invalid_request(json_depth.MESSAGE)
    return invalid_request(json_depth.MESSAGE) if json_depth.too_deep(encoded) else None


def _problem(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    """A line's entry in a failed batch's `errors` (its `line` is added where it is listed)."""
    return {"code": code, "message": message, "param": param}


def _missing(name: str) -> dict[str, Any]:
    return _problem("missing_required_parameter", f"Missing required parameter: '{name}'.", name)


def _parse(number: int, raw: bytes, endpoint: str, seen: set[str]) -> tuple[_Line | None, dict[str, Any] | None]:
    """The line's request, or its problem with OpenAI's codes (`invalid_json_line`, `missing_required_parameter`,
    `invalid_url`)."""
    try:
        request = json.loads(raw)
    except json.JSONDecodeError:
        return None, _problem("invalid_json_line", "This line is not parseable as valid JSON.")
    if not isinstance(request, dict):
        return None, _problem("invalid_request", "Each line must be a JSON object.")
    for name in ("custom_id", "method", "url", "body"):
        if request.get(name) is None:
            return None, _missing(name)
    custom_id = request["custom_id"]
    if not isinstance(custom_id, str) or not custom_id:
        return None, _problem("invalid_request", "The custom_id must be a non-empty string.", "custom_id")
    if not storable_custom_id(custom_id):  # files uploaded before the upload check refused these
        message = "The custom_id must be text without NUL characters or lone surrogates."
        return None, _problem("invalid_request", message, "custom_id")
    if custom_id in seen:
        return None, _problem("invalid_request", f"The custom_id {custom_id!r} appears more than once.", "custom_id")
    if request["url"] != endpoint:
        message = "The URL provided for this request does not match the batch endpoint."
        return None, _problem("invalid_url", message, "url")
    if request["method"] != "POST":
        return None, _problem("invalid_request", "The method must be POST.", "method")
    if not isinstance(request["body"], dict):
        return None, _problem("invalid_request", "The body must be a JSON object.", "body")
    seen.add(custom_id)
    return _Line(number, custom_id, request["body"]), None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _tokens_used(body: dict[str, Any]) -> dict[str, int]:
    """An answer's `usage` as the batch's token columns: chat and completions name `prompt_tokens` and
    `completion_tokens`, the image models `input_tokens` and `output_tokens`; embeddings have no output."""
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return {}
    prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details") or {}
    output_details = usage.get("completion_tokens_details") or usage.get("output_tokens_details") or {}
    return {
        "input_tokens": _count(usage.get("prompt_tokens", usage.get("input_tokens"))),
        "cached_tokens": _count(prompt_details.get("cached_tokens") if isinstance(prompt_details, dict) else 0),
        "output_tokens": _count(usage.get("completion_tokens", usage.get("output_tokens"))),
        "reasoning_tokens": _count(output_details.get("reasoning_tokens") if isinstance(output_details, dict) else 0),
    }


def _result_record(result: BatchResult) -> str:
    response = {
        "status_code": result.status_code,
        "request_id": result.request_id,
        "body": json.loads(result.body_json),
    }
    return json.dumps({"id": result.id, "custom_id": result.custom_id, "response": response, "error": None})


def _expired_record(custom_id: str) -> str:
    error = {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    }
    return json.dumps({"id": new_id("batch_req_"), "custom_id": custom_id, "response": None, "error": error})


def _output_file_id(batch: BatchJob, kind: str) -> str:
    """The same id for every attempt at finishing this batch."""
    return "file-" + hashlib.sha256(f"{batch.id}/{kind}".encode()).hexdigest()[:24]


def _envelope(error: OasisError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
