"""Runs one batch: validates its input file, pushes each line through the same services as the online
endpoints, commits every result with the batch's counters, and writes the output and error files.

A result row per input line (unique per batch and line) is the progress: a batch taken over after a crash runs
only the lines without one, so every custom_id is answered exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update

from oasis.blobs import BlobStore
from oasis.engines.text import background_work
from oasis.errors import OasisError, invalid_fields
from oasis.services.batches import RUNNING
from oasis.services.files import FileService
from oasis.storage import files as file_rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database
from oasis.storage.tables import BatchJob, BatchResult
from oasis.workers.leases import held_by, lease_one, renewal

log = logging.getLogger("oasis.batches")

# One request of a batch: a JSON body in, (status code, JSON body) out.
EndpointHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class _Line:
    number: int  # 1-based, as OpenAI reports lines
    custom_id: str
    body: dict[str, Any]


class _Stop(Exception):
    """The batch is no longer ours to run as it was: cancelled, or its lease taken over."""


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

    async def run_next(self, owner: str) -> bool:
        seq = await lease_one(
            self._db, BatchJob, [BatchJob.status.in_(RUNNING)], owner=owner, seconds=self._lease_seconds
        )
        if seq is None:
            return False
        try:
            await self._run(seq, owner)
        except _Stop:
            await self._release(seq, owner)  # cancelled meanwhile: the next round finalises it at once
        except Exception as exc:
            log.exception("running batch (row %s) failed", seq)
            await self._fail_if_exhausted(seq, owner, exc)
        return True

    async def _fail_if_exhausted(self, seq: int, owner: str, exc: Exception) -> None:
        """Below MAX_ATTEMPTS leases the batch waits for its lease to lapse and is taken up again (its results
        so far are kept); at the limit, a fault that keeps coming back fails it instead of looping forever."""
        async with self._db.session() as session:
            job = await session.get(BatchJob, seq)
            attempts = job.attempts if job is not None else 0
        if attempts < MAX_ATTEMPTS:
            return
        error = {
            "code": "server_error",
            "message": f"The batch failed {attempts} times; the last error: {type(exc).__name__}: {exc}",
            "param": None,
            "line": None,
        }
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
            await session.execute(
                update(BatchJob).where(*held_by(BatchJob, seq, owner)).values(lease_owner=None, lease_expires_at=None)
            )
            await session.commit()

    async def _run(self, seq: int, owner: str) -> None:
        batch = await self._batch(seq)
        lines, errors = await self._read_lines(batch)
        if batch.status == "validating":
            if errors:
                await self._set(
                    seq,
                    owner,
                    ("validating",),
                    status="failed",
                    failed_at=now(),
                    errors_json=json.dumps({"object": "list", "data": errors}),
                    lease_owner=None,
                    lease_expires_at=None,
                )
                return
            await self._set(seq, owner, ("validating",), status="in_progress", in_progress_at=now(), total=len(lines))
            batch = await self._batch(seq)
        if batch.status == "in_progress":
            if now() < batch.expires_at:
                await self._run_lines(batch, owner, lines)
            await self._set(seq, owner, ("in_progress",), status="finalizing", finalizing_at=now())
            batch = await self._batch(seq)
        if batch.status in ("finalizing", "cancelling"):
            await self._finalize(batch, owner, lines)

    # --- input --------------------------------------------------------------------------------------------

    async def _read_lines(self, batch: BatchJob) -> tuple[list[_Line], list[dict[str, Any]]]:
        async with self._db.session() as session:
            source = await file_rows.get_file(session, batch.project_id, batch.input_file_id)
        if source is None:
            return [], [{"code": "invalid_file", "message": "The input file was deleted.", "param": None, "line": None}]
        data = b"".join([piece async for piece in self._blobs.read(source.blob_key)])
        lines: list[_Line] = []
        errors: list[dict[str, Any]] = []
        seen: set[str] = set()
        for number, raw in enumerate(data.splitlines(), start=1):
            if not raw.strip():
                continue
            problem = None
            try:
                request = json.loads(raw)
            except json.JSONDecodeError:
                request, problem = None, "This line is not valid JSON."
            if problem is None and not isinstance(request, dict):
                problem = "Each line must be a JSON object."
            elif problem is None:
                assert isinstance(request, dict)
                custom_id = request.get("custom_id")
                if not isinstance(custom_id, str) or not custom_id:
                    problem = "Each line needs a `custom_id` string."
                elif custom_id in seen:
                    problem = f"The custom_id {custom_id!r} appears more than once."
                elif request.get("url") != batch.endpoint:
                    problem = f"The url {request.get('url')!r} does not match the batch's endpoint {batch.endpoint!r}."
                elif request.get("method") != "POST":
                    problem = "The method must be POST."
                elif not isinstance(request.get("body"), dict):
                    problem = "Each line needs a `body` object."
                else:
                    seen.add(custom_id)
                    lines.append(_Line(number, custom_id, request["body"]))
            if problem is not None:
                errors.append({"code": "invalid_request", "message": problem, "param": None, "line": number})
        if not lines and not errors:
            errors.append(
                {"code": "empty_file", "message": "The input file has no requests.", "param": None, "line": None}
            )
        return lines, errors

    # --- running ------------------------------------------------------------------------------------------

    async def _run_lines(self, batch: BatchJob, owner: str, lines: list[_Line]) -> None:
        async with self._db.session() as session:
            done = set(
                (await session.scalars(select(BatchResult.line).where(BatchResult.batch_seq == batch.seq))).all()
            )
        waiting = [line for line in lines if line.number not in done]
        handler = self._endpoints[batch.endpoint]
        queue: asyncio.Queue[_Line] = asyncio.Queue()
        for line in waiting:
            queue.put_nowait(line)

        async def work() -> None:
            background_work.set(True)  # this task's engine requests queue behind online ones
            while not queue.empty():
                if now() >= batch.expires_at:
                    return
                line = queue.get_nowait()
                status_code, body = await self._call(handler, line.body)
                await self._record(batch, owner, line, status_code, body)

        workers = [asyncio.create_task(work()) for _ in range(min(self._concurrency, len(waiting)) or 1)]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    @staticmethod
    async def _call(handler: EndpointHandler, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("stream"):
            failure = OasisError(400, "Streaming is not supported in batches.", param="stream")
            return failure.status, _envelope(failure)
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

    async def _record(self, batch: BatchJob, owner: str, line: _Line, status_code: int, body: dict[str, Any]) -> None:
        ok = status_code == 200
        async with self._db.session() as session:
            moved = await session.execute(
                update(BatchJob)
                .where(*held_by(BatchJob, batch.seq, owner), BatchJob.status == "in_progress")
                .values(
                    completed=BatchJob.completed + (1 if ok else 0),
                    failed=BatchJob.failed + (0 if ok else 1),
                    **renewal(self._lease_seconds),
                )
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                await session.rollback()
                raise _Stop
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

    # --- output -------------------------------------------------------------------------------------------

    async def _finalize(self, batch: BatchJob, owner: str, lines: list[_Line]) -> None:
        async with self._db.session() as session:
            results = {
                result.line: result
                for result in await session.scalars(select(BatchResult).where(BatchResult.batch_seq == batch.seq))
            }
        outputs: list[str] = []
        failures: list[str] = []
        expired = 0
        for line in lines:
            result = results.get(line.number)
            if result is None:
                if batch.status == "cancelling":
                    continue  # a cancelled batch reports what finished
                expired += 1
                failures.append(
                    json.dumps(
                        {
                            "id": new_id("batch_req_"),
                            "custom_id": line.custom_id,
                            "response": None,
                            "error": {
                                "code": "batch_expired",
                                "message": "This request could not be executed before the completion window expired.",
                            },
                        }
                    )
                )
                continue
            record = json.dumps(
                {
                    "id": result.id,
                    "custom_id": result.custom_id,
                    "response": {
                        "status_code": result.status_code,
                        "request_id": result.request_id,
                        "body": json.loads(result.body_json),
                    },
                    "error": None,
                }
            )
            (outputs if result.ok else failures).append(record)
        output_file_id = await self._write(batch, outputs, "output")
        error_file_id = await self._write(batch, failures, "errors")
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

    async def _write(self, batch: BatchJob, records: list[str], kind: str) -> str | None:
        if not records:
            return None
        body = io.BytesIO(("\n".join(records) + "\n").encode())
        stored = await self._files.store(
            batch.project_id, purpose="batch_output", filename=f"{batch.id}_{kind}.jsonl", source=body
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
        if "lease_owner" not in values:
            values["lease_expires_at"] = time.time() + self._lease_seconds
        async with self._db.session() as session:
            moved = await session.execute(
                update(BatchJob).where(*held_by(BatchJob, seq, owner), BatchJob.status.in_(statuses)).values(**values)
            )
            if moved.rowcount != 1:  # type: ignore[attr-defined]
                await session.rollback()
                raise _Stop
            await session.commit()


def _envelope(error: OasisError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
