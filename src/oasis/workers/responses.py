"""Generates background responses (`background: true`): the stored response row is the job (DESIGN.md habit 8).

A worker leases a queued response, plans its request again and streams the answer into `response_events`, a
few tokens to an event, for the clients that poll it (`retrieve`) or stream it. Every write is made only while the
worker holds the lease and the response is still in progress, so a cancel or a delete that comes in meanwhile
wins; the last event and the stored answer (and its conversation's new items) commit together. Between built-in
tool calls, the generation's checkpoint (its output so far, what the calls showed the model, the calls still to
run) is written with the events before it. A response taken over after a crash (its lease lapsed) resumes from its
checkpoint, or is generated again from its start when it has none; a call the dead attempt had begun and that
reaches outside (an MCP tool, code in a container) is not made again. The dead attempt's events are removed first,
and a stream that had sent some of them is told so (background.restarted_event), so nothing is shown twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from sqlalchemy import select, update

from oasis.engines.registry import serve_for_project
from oasis.errors import OasisError
from oasis.metrics import JOB_DURATION
from oasis.protocol.responses import CreateResponseRequest
from oasis.services.responses.background import CHECKPOINT, LAST_EVENTS, QUEUED_EVENTS
from oasis.services.responses.conversations import ConversationService
from oasis.services.responses.service import PlannedResponse, ResponseService
from oasis.storage import responses as rows
from oasis.storage.db import Database
from oasis.storage.leases import execution_name, handed_back
from oasis.storage.tables import StoredResponse
from oasis.workers.concurrent_jobs import ConcurrentJobs
from oasis.workers.leases import JobClaims, LeaseKeeper

log = logging.getLogger("oasis.responses")

# Leases of one response (each crash that takes it up again is one) before it fails instead of trying again.
MAX_ATTEMPTS = 3
# How often a response being generated looks for a cancel or a delete made by another process.
CANCEL_POLL_SECONDS = 0.5
# How long generated events wait to be written together: a few tokens an event row, not one.
FLUSH_SECONDS = 0.1
# Delta events of one part that are written as one when they come within a flush.
_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.reasoning_text.delta",
        "response.function_call_arguments.delta",
        "response.custom_tool_call_input.delta",
        "response.code_interpreter_call_code.delta",
    }
)
_PLACE = ("item_id", "output_index", "content_index")


class _Stop(Exception):
    """The response is no longer ours to write: cancelled, deleted, or its lease taken over."""


class _EventLog:
    """A generation's events on their way to `response_events`: numbered from the response's next number, a delta
    joined to the one before it when both are of the same part and neither is written yet."""

    def __init__(self, response_id: str, generation: str, first_number: int) -> None:
        self.response_id = response_id
        self.generation = generation
        self.pending: list[dict[str, Any]] = []
        self.done_items: list[dict[str, Any]] = []  # the output items finished so far
        self.flushed_at = time.monotonic()
        self._next = first_number

    def add(self, event: dict[str, Any]) -> None:
        if event["type"] == "response.output_item.done":
            self.done_items.append(event["item"])
        last = self.pending[-1] if self.pending else None
        if (
            last is not None
            and event["type"] in _DELTAS
            and last["type"] == event["type"]
            and all(last.get(key) == event.get(key) for key in _PLACE)
        ):
            last["delta"] += event["delta"]
            if "logprobs" in event:
                last["logprobs"] = [*(last.get("logprobs") or []), *(event["logprobs"] or [])]
            return
        self.pending.append({**event, "sequence_number": self._next})
        self._next += 1

    def drop_endings(self) -> None:
        """Takes back the pending events that would end the stream (a cancelled response ends without them)."""
        while self.pending and self.pending[-1]["type"] in (*LAST_EVENTS, "error"):
            self.pending.pop()
            self._next -= 1

    @property
    def due(self) -> bool:
        if not self.pending:
            return False
        return self.pending[-1]["type"] not in _DELTAS or time.monotonic() - self.flushed_at >= FLUSH_SECONDS

    def written(self, count: int) -> None:
        """The first `count` pending events are committed."""
        del self.pending[:count]
        self.flushed_at = time.monotonic()

    @property
    def next_number(self) -> int:
        return self._next


class BackgroundResponses:
    """Leases background responses for the worker loop and generates up to `concurrency` of them at once."""

    def __init__(
        self,
        db: Database,
        responses: ResponseService,
        conversations: ConversationService,
        lease_seconds: float,
        concurrency: int,
    ) -> None:
        self._db = db
        self._responses = responses
        self._conversations = conversations
        self._lease_seconds = lease_seconds
        self.jobs = ConcurrentJobs(concurrency)
        self._cancels: dict[str, asyncio.Event] = {}  # responses generated here, by id: a cancel here stops one
        self._stopping = False
        waiting = StoredResponse.status.in_(("queued", "in_progress"))
        self.claims = JobClaims(db, StoredResponse, [waiting, StoredResponse.deleted_at.is_(None)])
        responses.cancel_here = self.cancel_here

    async def run_next(self, owner: str) -> bool:
        if self.jobs.full:
            return False
        holder = execution_name(owner)  # each execution's writes and release are its own
        seq = await self.claims.lease_one(owner=holder, seconds=self._lease_seconds)
        if seq is None:
            return False
        self.jobs.start(self.execute(seq, holder))
        return True

    def cancel_here(self, response_id: str) -> None:
        cancel = self._cancels.get(response_id)
        if cancel is not None:
            cancel.set()

    def stop(self) -> None:
        """The process is stopping: generations cut off from now on hand their responses back."""
        self._stopping = True

    async def close(self, grace_seconds: float = 2.0) -> None:
        """Lets generations in flight finish for a moment, then cuts them off (another worker starts them again)."""
        self.stop()
        await self.jobs.close(grace_seconds)

    async def execute(self, seq: int, owner: str) -> None:
        """Generates the leased response until it ends; releases the lease after."""
        started = time.perf_counter()
        outcome = "stopped"
        cut_off = False
        try:
            async with LeaseKeeper(self._db, StoredResponse, seq, owner, self._lease_seconds):
                outcome = await self._execute(seq, owner)
        except _Stop:
            pass
        except asyncio.CancelledError:
            cut_off = self._stopping
            raise
        except Exception:  # the database failed it: its lease is freed, and the next attempt starts it again
            outcome = "failed"
            log.exception("generating background response (row %s) failed", seq)
        finally:
            await self._release(seq, owner, cut_off)
            JOB_DURATION.labels("response", outcome).observe(time.perf_counter() - started)

    async def _execute(self, seq: int, owner: str) -> str:
        row = await self._row(seq)
        serve_for_project(row.project_id)  # the project's fine-tunes resolve for this response, and no other's
        log_ = _EventLog(row.id, owner, row.next_event)
        base = {**json.loads(row.response_json), "status": "in_progress"}
        async with self._db.session() as session:
            # A generation taken over after a crash starts again: the dead one's events go first (its numbers are
            # not used again).
            values = {"status": "in_progress", "response_json": json.dumps(base)}
            await self._held(session, seq, owner, ("queued", "in_progress"), values)
            await rows.drop_events(session, row.id, QUEUED_EVENTS)
            await session.commit()
        self._responses.bell.ring(row.id)
        checkpoint = json.loads(row.checkpoint_json) if row.checkpoint_json is not None else None
        earlier = checkpoint["output"] if checkpoint is not None else None  # what a dead attempt had made
        if row.attempts > MAX_ATTEMPTS:
            await self._fail(
                seq, owner, log_, base, "server_error", "The response was interrupted too many times.", earlier=earlier
            )
            return "failed"
        try:
            request = CreateResponseRequest.model_validate_json(row.request_json or "{}")
            plan = await self._responses.plan(row.project_id, request, response_id=row.id, created_at=row.created_at)
            plan.resumed = checkpoint
        except OasisError as exc:  # what was there when it was queued is gone (a file, a model, a store)
            await self._fail(seq, owner, log_, base, exc.code or exc.type, exc.message, exc.param, earlier=earlier)
            return "failed"
        except Exception as exc:
            log.exception("background response %s could not be planned", row.id)
            await self._fail(seq, owner, log_, base, "server_error", f"{type(exc).__name__}: {exc}", earlier=earlier)
            return "failed"
        cancel = asyncio.Event()
        self._cancels[row.id] = cancel
        watch = asyncio.create_task(self._watch(seq, owner, cancel))
        generate = asyncio.create_task(self._generate(seq, owner, plan, log_))
        cancelled = asyncio.create_task(cancel.wait())
        try:
            await asyncio.wait({generate, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            if not generate.done():
                generate.cancel()
            try:
                return await generate
            except _Stop:
                pass
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # a shutdown, not the cancel this stopped it for
                    raise
            return "cancelled" if await self._cancelled(seq, owner, log_, base) else "stopped"
        except OasisError as exc:  # refused as it began (an upstream's error, a model gone since it was queued)
            await self._fail(seq, owner, log_, base, exc.code or exc.type, exc.message, exc.param, earlier=earlier)
            return "failed"
        except Exception as exc:
            log.exception("background response %s failed", row.id)
            await self._fail(seq, owner, log_, base, "server_error", f"{type(exc).__name__}: {exc}", earlier=earlier)
            return "failed"
        finally:
            self._cancels.pop(row.id, None)
            for task in (watch, generate, cancelled):
                task.cancel()
            await asyncio.gather(watch, generate, cancelled, return_exceptions=True)

    async def _generate(self, seq: int, owner: str, plan: PlannedResponse, log_: _EventLog) -> str:
        """Streams the answer into the event log; returns how it ended."""

        async def keep(plan: PlannedResponse, response: dict[str, Any], answer: Any, finished: dict[str, Any]) -> None:
            values = {**self._responses.stored_values(plan, response, answer), **rows.JOB_DONE}
            async with self._db.session() as session:
                await self._held(session, seq, owner, ("in_progress",), values)  # before the last event is taken
                log_.add(finished)
                if plan.conversation_id is not None:
                    items = self._responses.conversation_items(plan, response, answer)
                    await self._conversations.add_in(session, plan.conversation_id, items)
                await self._add_pending(session, log_)

        events = self._responses.background_events(plan, keep)
        async with contextlib.aclosing(events):  # a cancel mid-write still frees the engine's sequence at once
            async for event in events:
                kind = event["type"]
                if kind == CHECKPOINT:  # with the events before it, at once: a crash after resumes here
                    await self._write(
                        seq, owner, log_, ("in_progress",), {"checkpoint_json": json.dumps(event["state"])}
                    )
                    continue
                if kind in ("response.completed", "response.incomplete"):  # written by `keep`
                    return kind.removeprefix("response.")
                log_.add(event)
                if kind == "response.failed":
                    values = {
                        "status": "failed",
                        "response_json": json.dumps(event["response"]),
                        **rows.JOB_DONE,
                    }
                    await self._write(seq, owner, log_, ("in_progress",), values)
                    return "failed"
                if log_.due:
                    await self._write(seq, owner, log_, ("in_progress",), {})
        return "stopped"

    async def _watch(self, seq: int, owner: str, cancel: asyncio.Event) -> None:
        """Sets `cancel` once the response is no longer in progress for this execution (a cancel or a delete by
        another process, or its lease lost)."""
        while not cancel.is_set():
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            try:
                async with self._db.session() as session:
                    current = await session.execute(
                        select(StoredResponse.status, StoredResponse.lease_owner, StoredResponse.deleted_at).where(
                            StoredResponse.seq == seq
                        )
                    )
                    status, holder, deleted_at = current.one()
            except Exception:  # a database hiccup: the generation's own writes stop it if it is no longer ours
                continue
            if status != "in_progress" or holder != owner or deleted_at is not None:
                cancel.set()

    async def _cancelled(self, seq: int, owner: str, log_: _EventLog, base: dict[str, Any]) -> bool:
        """Stores what a cancelled response made before it stopped: its finished items, and its events so far
        (not one that would end its stream as if it had finished). False when it was not cancelled but deleted or
        taken over: nothing of it is this execution's to write."""
        log_.drop_endings()
        response = {**base, "status": "cancelled", "output": log_.done_items}
        try:
            values = {"response_json": json.dumps(response), **rows.JOB_DONE}
            await self._write(seq, owner, log_, ("cancelled",), values)
        except _Stop:
            return False
        return True

    async def _fail(
        self,
        seq: int,
        owner: str,
        log_: _EventLog,
        base: dict[str, Any],
        code: str,
        message: str,
        param: str | None = None,
        earlier: list[dict[str, Any]] | None = None,
    ) -> None:
        """Ends the response failed, with the `error` and `response.failed` events a stream of it ends with (or,
        cancelled meanwhile, cancelled); its output is the items it finished (`earlier`: those of a dead attempt's
        checkpoint, for one that fails before it generates)."""
        log_.drop_endings()  # an ending whose write failed is not followed by a second one
        error = {"code": code, "message": message, "param": param}
        output = log_.done_items or earlier or []
        failed = {**base, "status": "failed", "error": {"code": code, "message": message}, "output": output}
        log_.add({"type": "error", "sequence_number": 0, **error, "error": {**error, "type": "server_error"}})
        log_.add({"type": "response.failed", "sequence_number": 0, "response": failed})
        values = {"status": "failed", "response_json": json.dumps(failed), **rows.JOB_DONE}
        try:
            await self._write(seq, owner, log_, ("queued", "in_progress"), values)
        except _Stop:
            await self._cancelled(seq, owner, log_, base)

    async def _write(
        self, seq: int, owner: str, log_: _EventLog, statuses: tuple[str, ...], values: dict[str, Any]
    ) -> None:
        """Writes the pending events (and `values` on the row) while the response is ours and in `statuses`."""
        async with self._db.session() as session:
            await self._held(session, seq, owner, statuses, values)
            await self._add_pending(session, log_)

    async def _add_pending(self, session: Any, log_: _EventLog) -> None:
        """Adds the pending events and the number after them in the caller's transaction, and commits it; they
        leave the log only once committed (a failed commit loses none of them)."""
        pending = list(log_.pending)
        rows.add_events(session, log_.response_id, log_.generation, pending)
        await rows.set_next_event(session, log_.response_id, log_.next_number)
        await session.commit()
        log_.written(len(pending))
        self._responses.bell.ring(log_.response_id)

    @staticmethod
    async def _held(session: Any, seq: int, owner: str, statuses: tuple[str, ...], values: dict[str, Any]) -> None:
        # Writing the owner again changes nothing; the UPDATE's conditions are the check, and its row lock holds.
        if not await rows.update_held(session, seq, owner, statuses, {"lease_owner": owner, **values}):
            await session.rollback()
            raise _Stop

    async def _row(self, seq: int) -> StoredResponse:
        async with self._db.session() as session:
            row = await session.get(StoredResponse, seq)
        if row is None or row.deleted_at is not None:
            raise _Stop
        return row

    async def _release(self, seq: int, owner: str, cut_off: bool) -> None:
        """Frees the lease; `cut_off` by a shutdown, the lease does not count as an attempt either."""
        values = handed_back(StoredResponse) if cut_off else {"lease_owner": None, "lease_expires_at": None}
        with contextlib.suppress(Exception):
            async with self._db.session() as session:
                await session.execute(
                    update(StoredResponse)
                    .where(StoredResponse.seq == seq, StoredResponse.lease_owner == owner)
                    .values(**values)
                )
                await session.commit()
