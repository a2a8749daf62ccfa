"""Executes runs: each generation of a run (a "turn") shows the model the thread, streams its reply into a
message, and ends the run `completed`, `incomplete`, or at `requires_action` when the model calls functions.

The run row is the job (DESIGN.md habit 8). A streamed run is executed by the API process that created it, a
polled one by whichever worker leases it; both go through `RunExecutor.execute`. Every write is made only while
the executor holds the lease and the run is still in the status it expects, so a cancel that comes in meanwhile
wins, and a run taken over after a crash (its lease lapsed) starts its turn again: the unfinished message of the
dead attempt is removed first, so nothing is shown twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import and_, func, inspect, or_, select, true, update

from oasis.engines.registry import serve_for_project
from oasis.errors import OasisError
from oasis.metrics import JOB_DURATION
from oasis.protocol.extensions import ChatCompletionRequest
from oasis.services.assistants import code_interpreter, file_search
from oasis.services.assistants.assistants import ModelLoader
from oasis.services.assistants.citations import Citer, Segment, sources_of
from oasis.services.assistants.code_interpreter import CodeCall, CodeInterpreter, code_of, partial_code
from oasis.services.assistants.events import NoEvents, RunEvents
from oasis.services.assistants.file_search import FileSearch, SearchCall, queries_of
from oasis.services.assistants.prompt import ChatMessages, DoesNotFit, fitted, text_of, thread_items
from oasis.services.assistants.wire import message_to_wire, run_to_wire, step_to_wire
from oasis.services.chat.generation import close_chunks
from oasis.services.chat.service import ChatService, PreparedChat, TokenTally
from oasis.services.keys import Principal
from oasis.services.rate_limits import CHAT_COMPLETIONS, RateLimiter, estimate_tokens
from oasis.storage import runs as run_rows
from oasis.storage import threads as thread_rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database
from oasis.storage.leases import database_now, execution_name, handed_back
from oasis.storage.tables import Run, RunStep, ThreadMessage
from oasis.workers.concurrent_jobs import ConcurrentJobs
from oasis.workers.leases import JobClaims, LeaseKeeper

log = logging.getLogger("oasis.runs")

# Leases of one run (each crash that takes it up again is one) before it fails instead of trying again.
MAX_ATTEMPTS = 3
# How often a run being generated looks for a cancel made by another process.
CANCEL_POLL_SECONDS = 0.5
# Room kept for the reply when `auto` truncation fits the thread into the model's context.
REPLY_ROOM = 512
# How long a run waits, in all, for an engine whose queue is full before it fails with rate_limit_exceeded.
BUSY_WAIT_SECONDS = 60.0
# The size `measure` gives a prompt longer than the model's whole context.
TOO_LONG = 1 << 62
# Searches one run may make before the model must answer with what it found: a small model offered the tool
# again after a search tends to call it again, or to lose the thread, rather than answer.
MAX_SEARCHES_PER_RUN = 1
# Code runs one run may make: a second lets the model fix what the first got wrong.
MAX_CODE_RUNS_PER_RUN = 2
# Characters of search results shown to the model per token of its context: about half the context.
RESULT_CHARS_PER_CONTEXT_TOKEN = 2


# A step's columns but its `seq`, which the database gives.
_STEP_COLUMNS = tuple(column.key for column in inspect(RunStep).column_attrs if column.key != "seq")

# A chat error's status -> the run's last_error code.
_ERROR_CODES = {429: "rate_limit_exceeded", 400: "invalid_prompt"}


class _Stop(Exception):
    """The run is no longer ours to write: cancelled, deleted, or its lease taken over."""


@dataclass
class _Turn:
    """What one generation has produced so far."""

    message: ThreadMessage | None = None
    step: RunStep | None = None
    text: str = ""
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # The tokens generated so far, counted if the generation stops before its usage is reported (a cancel).
    tally: TokenTally = field(default_factory=TokenTally)
    # Cites the answer's sentences when this run searched files; `annotations` are the message's so far.
    citer: Citer | None = None
    annotations: list[dict[str, Any]] = field(default_factory=list)
    # What a file_search call without a usable query searches for, and the thread's searches so far.
    last_user_text: str = ""
    searches_before: int = 0
    # Code runs of this run so far; the files they wrote (sandbox path -> file id) and the images the run's
    # messages have not shown yet.
    code_runs: int = 0
    code_files: dict[str, str] = field(default_factory=dict)
    pending_images: list[str] = field(default_factory=list)
    # The built-in tool step whose calls are being streamed (`code_interpreter` input as it is written).
    tool_step_id: str | None = None
    streamed_code: dict[int, str] = field(default_factory=dict)  # by the call's index in the generation
    streamed_ids: dict[int, str] = field(default_factory=dict)
    # Whether function calls are shown as they are written: only where no built-in call can come in the same
    # generation (its step would open while theirs is open). Their step, opened (not stored) as the first call
    # began, and the calls shown on it by their index in the generation: id, name and the arguments shown.
    streams_functions: bool = False
    function_step: RunStep | None = None
    streamed_functions: dict[int, dict[str, str]] = field(default_factory=dict)
    # Steps a stream opened and then ended (cancelled or failed) whose rows the next write stores.
    dropped_steps: list[RunStep] = field(default_factory=list)
    # Its message and step written as ended (committed): a failure after that leaves them as they are.
    ended: bool = False
    # Its message ended where its tool calls began (shown and stored so; a crash before the turn is recorded
    # generates the turn again from the start, its message with it).
    message_closed: bool = False


def _calls_of(steps: list[RunStep], kind: str) -> list[dict[str, Any]]:
    """The calls of one tool type in the finished steps."""
    return [
        call
        for step in steps
        if step.status == "completed"
        for call in json.loads(step.step_details_json)["tool_calls"]
        if call["type"] == kind
    ]


def _shown_images(messages: list[ThreadMessage]) -> set[str]:
    return {
        part["image_file"]["file_id"]
        for message in messages
        for part in json.loads(message.content_json)
        if part["type"] == "image_file"
    }


def _function_tools(run: Run) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": tool["function"]}
        for tool in json.loads(run.tools_json)
        if tool["type"] == "function"
    ]


def _offers(run: Run, kind: str, function_name: str) -> bool:
    """Whether the run has the built-in tool `kind`, offered to the model as the function `function_name` (unless
    one of the run's own functions already has that name)."""
    tools = json.loads(run.tools_json)
    named = any(tool["type"] == "function" and tool["function"]["name"] == function_name for tool in tools)
    return any(tool["type"] == kind for tool in tools) and not named


def _offers_search(run: Run) -> bool:
    return _offers(run, file_search.TOOL_NAME, file_search.TOOL_NAME)


def _offers_code(run: Run) -> bool:
    return _offers(run, code_interpreter.TOOL_TYPE, code_interpreter.FUNCTION_NAME)


def _new_step(run: Run, stamp: int, details: dict[str, Any]) -> RunStep:
    """A step of `run`, in progress; `details` is its `step_details` (its `type` is the step's type)."""
    return RunStep(
        id=new_id("step_"),
        project_id=run.project_id,
        thread_id=run.thread_id,
        run_id=run.id,
        assistant_id=run.assistant_id,
        created_at=stamp,
        type=details["type"],
        status="in_progress",
        step_details_json=json.dumps(details),
    )


def _file_paths(text: str, files: dict[str, str]) -> list[dict[str, Any]]:
    """`file_path` annotations for each mention of a file the run's code wrote (`sandbox:/mnt/data/x.csv`)."""
    found = []
    for path, file_id in files.items():
        # the name ends where no name character follows: a full stop ending the sentence is not part of it
        for match in re.finditer(r"(?:sandbox:)?" + re.escape(path) + r"(?![\w-]|\.[\w-])", text):
            found.append(
                {
                    "type": "file_path",
                    "text": match.group(0),
                    "start_index": match.start(),
                    "end_index": match.end(),
                    "file_path": {"file_id": file_id},
                }
            )
    return found


def _unstored(steps: list[RunStep]) -> list[RunStep]:
    """New rows of `steps`: a write rolled back after its flush leaves them holding the `seq` it took, which
    another row may have taken since."""
    return [RunStep(**{key: getattr(step, key) for key in _STEP_COLUMNS}) for step in steps]


def _function_call(call: dict[str, str]) -> dict[str, Any]:
    """A function call (`id`, `name`, `arguments`) as a tool_calls step holds it, its output not yet given."""
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": call["name"], "arguments": call["arguments"], "output": None},
    }


def _emit_step_delta(events: RunEvents, step_id: str | None, calls: list[dict[str, Any]]) -> None:
    """A tool-call step's delta bringing `calls` (each with its `index` in the step)."""
    events.emit(
        "thread.run.step.delta",
        {
            "id": step_id,
            "object": "thread.run.step.delta",
            "delta": {"step_details": {"type": "tool_calls", "tool_calls": calls}},
        },
    )


def _rest(whole: str, shown: str) -> str:
    """What a stream has still to show of `whole`, having shown `shown` (nothing if that was not its start)."""
    return whole[len(shown) :] if whole.startswith(shown) else ""


def _stream_error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": None}}


def _error(code: str, message: str) -> str:
    return json.dumps({"code": code, "message": message})


class RunExecutor:
    def __init__(
        self,
        db: Database,
        chat: ChatService,
        searcher: FileSearch,
        code: CodeInterpreter,
        lease_seconds: float,
        load_model: ModelLoader | None = None,
        rate_limits: RateLimiter | None = None,
    ) -> None:
        self._db = db
        self._chat = chat
        self._load_model = load_model
        self._rate_limits = rate_limits
        self._searcher = searcher
        self._code = code
        self._lease_seconds = lease_seconds
        # Runs executing in this process, by id: a cancel made here stops them at once.
        self._cancels: dict[str, asyncio.Event] = {}
        # The generation each execution (run row, lease holder) is in, so that a failure keeps what it already
        # wrote and streamed.
        self._turns: dict[tuple[int, str], _Turn] = {}
        self._stopping = False

    def stop(self) -> None:
        """The process is stopping: executions cut off from now on hand their runs back (see `handed_back`)."""
        self._stopping = True

    def cancel_here(self, run_id: str) -> None:
        event = self._cancels.get(run_id)
        if event is not None:
            event.set()

    async def execute(self, seq: int, owner: str, events: RunEvents | None = None) -> None:
        """Executes the leased run until it ends or waits for tool outputs; releases the lease after."""
        sink = events or NoEvents()
        started = time.perf_counter()
        outcome = "stopped"
        cut_off = False
        try:
            async with LeaseKeeper(self._db, Run, seq, owner, self._lease_seconds):
                try:
                    outcome = await self._execute(seq, owner, sink)
                except _Stop:
                    # A cancel that came in between two of our writes: end it here, while the lease is ours.
                    if await self._cancelled_meanwhile(seq, owner, sink, self._turns.get((seq, owner))):
                        outcome = "cancelled"
                    else:
                        # Taken over by another worker, or its thread deleted: a stream must not end silently
                        # with the run still live, so its reader is told (the SDK raises it).
                        sink.emit("error", _stream_error("This run is no longer executed by this stream; retrieve it."))
        except _Stop:
            pass
        except asyncio.CancelledError:
            cut_off = self._stopping
            raise
        except Exception as exc:
            outcome = "failed"
            if isinstance(exc, OasisError):  # a chat error: before the generation, or with an upstream's first chunk
                log.warning("run (row %s) failed: %s", seq, exc.message)
                code, message = _ERROR_CODES.get(exc.status, "server_error"), exc.message
            else:
                log.exception("executing run (row %s) failed", seq)
                code, message = "server_error", f"The run failed: {type(exc).__name__}: {exc}"
            with contextlib.suppress(_Stop):
                await self._fail(seq, owner, sink, code, message, self._turns.get((seq, owner)))
        finally:
            self._turns.pop((seq, owner), None)
            await self._release(seq, owner, cut_off)
            JOB_DURATION.labels("run", outcome).observe(time.perf_counter() - started)

    async def _execute(self, seq: int, owner: str, events: RunEvents) -> str:
        run = await self._run(seq)
        if run.status == "queued" and run.expires_at is not None and now() > run.expires_at:
            # Waited in the queue past its lifetime (the workers busy or down): expired, as OpenAI's are, rather
            # than started (nor its model loaded) for a client that has long given up.
            await self._expire(run, owner, events)
            return "expired"
        serve_for_project(run.project_id)  # the project's fine-tunes resolve for this run, and no other's
        if self._load_model is not None:
            with contextlib.suppress(OasisError):  # a model gone since: the turn fails with the chat error
                await self._load_model(run.project_id, run.model)
        if run.status == "cancelling":
            await self._cancelled(run, owner, events, None)
            return "cancelled"
        if run.status == "requires_action":  # leased only once its time ran out
            await self._expire(run, owner, events)
            return "expired"
        if run.status == "in_progress":  # taken over from a worker that died mid-turn
            if run.attempts > MAX_ATTEMPTS:
                await self._fail(seq, owner, events, "server_error", "The run was interrupted too many times.")
                return "failed"
            await self._drop_unfinished(run, owner)
        else:
            values: dict[str, Any] = {"status": "in_progress"}
            if run.started_at is None:
                values["started_at"] = now()
            await self._write(run.seq, owner, ("queued",), values)
            run = await self._run(seq)
            events.emit("thread.run.in_progress", run_to_wire(run))
        # A turn that ran built-in tools is followed by one that answers with what they gave.
        while (outcome := await self._turn(run, owner, events)) == "tools_ran":
            run = await self._run(seq)
        return outcome

    # --- one generation ------------------------------------------------------------------------------------------

    async def _turn(self, run: Run, owner: str, events: RunEvents) -> str:
        context = self._chat.context_length(run.model) or 4096
        async with self._db.session() as session:
            steps = await run_rows.tool_steps(session, run.thread_id)
            conversation = await thread_rows.conversation(session, run.thread_id)
        items = thread_items(conversation, steps, context * RESULT_CHARS_PER_CONTEXT_TOKEN)
        # `required` or a named function means: call a tool before answering. Once this run has, it may answer.
        called = any(step.run_id == run.id and step.status == "completed" for step in steps)
        own_steps = [step for step in steps if step.run_id == run.id]
        searched = _calls_of(own_steps, file_search.TOOL_NAME)
        coded = _calls_of(own_steps, code_interpreter.TOOL_TYPE)
        shown = _shown_images([message for message in conversation if message.run_id == run.id])
        turn = _Turn(
            citer=Citer(sources_of(searched)) if searched else None,
            last_user_text=next((text_of(m.content_json) for m in reversed(conversation) if m.role == "user"), ""),
            searches_before=len(_calls_of(steps, file_search.TOOL_NAME)),
            code_runs=len(coded),
            code_files={path: file_id for call in coded for path, file_id in call.get("_files", {}).items()},
            pending_images=[
                output["image"]["file_id"]
                for call in coded
                for output in call[code_interpreter.TOOL_TYPE]["outputs"]
                if output["type"] == "image" and output["image"]["file_id"] not in shown
            ],
        )
        self._turns[(run.seq, owner)] = turn
        may_search = len(searched) < MAX_SEARCHES_PER_RUN
        may_code = len(coded) < MAX_CODE_RUNS_PER_RUN
        # Each measured candidate with its prepared form, so the chosen one is not rendered a second time.
        measured: list[tuple[ChatMessages, PreparedChat]] = []

        def measure(messages: ChatMessages) -> int | None:
            try:
                request = self._request(run, messages, called, may_search, may_code, budget=False)
                prepared = self._chat.prepare_local(request)
            except OasisError as exc:
                if exc.code == "context_length_exceeded":
                    return TOO_LONG  # over the whole context: truncation goes on dropping
                raise
            if prepared is None:
                return None
            measured.append((messages, prepared))
            return len(prepared.prompt)

        # An error here (the prompt does not fit, the engine's queue stays full) fails the run in `execute`
        limit = self._prompt_limit(run)
        try:
            messages, size = fitted(run, items, measure, limit)
        except DoesNotFit:
            if run.max_prompt_tokens is not None:
                return await self._incomplete(run, owner, events, "max_prompt_tokens")
            raise OasisError(
                400, "The thread's newest message does not fit the model's context.", code="invalid_prompt"
            ) from None
        prepared = next((ready for candidate, ready in measured if candidate is messages), None)
        request = self._request(run, messages, called, may_search, may_code)
        offers_built_in = (may_search and _offers_search(run)) or (may_code and _offers_code(run))
        choice = json.loads(run.tool_choice_json)
        forces_a_function = not called and isinstance(choice, dict) and choice.get("type") == "function"
        turn.streams_functions = not offers_built_in or forces_a_function  # else a built-in call could come too
        budget = request.max_completion_tokens or 0
        if prepared is not None and run.max_completion_tokens is not None and size is not None:
            # What is left of the run's budget, within the room the prompt leaves in the context.
            room = prepared.engine.context_length - size
            budget = min(max(1, run.max_completion_tokens - run.completion_tokens), room)
            prepared = replace(prepared, params=replace(prepared.params, max_tokens=budget))
        await self._admit(run, request, size, budget)
        chunks = await self._open(request, prepared, turn.tally)
        if size is not None:  # counted if the generation ends before its usage is reported
            turn.prompt_tokens = size
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        while True:
            try:
                cancelled = await self._generate(run, owner, events, chunks, turn)
                break
            except OasisError as exc:
                # An upstream's full queue answers with its stream's first chunk: waited out as a local one's is
                # (between tries, the next generation's watcher sees a cancel)
                if exc.status != 429 or turn.message is not None or turn.calls or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(float(exc.headers.get("retry-after", "1")))
                chunks = await self._open(request, prepared, turn.tally)
        if cancelled:
            await self._cancelled(run, owner, events, turn)
            return "cancelled"
        return await self._finish(run, owner, events, turn)

    async def _admit(
        self, run: Run, request: ChatCompletionRequest, prompt_tokens: int | None, completion_budget: int
    ) -> None:
        """Counts the turn against its project's tokens-per-minute limit as a chat request is counted (its prompt
        and the most it may generate: the run's budget as fitted to the context's room; none is counted without a
        budget, as for a chat request without max_tokens): a run past it fails with `rate_limit_exceeded`, as
        OpenAI's do (the 429 fails it in `execute`)."""
        if self._rate_limits is None or not self._rate_limits.enabled:
            return
        if prompt_tokens is None:  # an upstream model: estimated from the characters, as its requests are
            tokens = estimate_tokens(CHAT_COMPLETIONS, request.model_dump(mode="json", exclude_none=True))
        else:
            tokens = prompt_tokens + completion_budget
        await self._rate_limits.admit(Principal(project_id=run.project_id, key_id=None), tokens, request=False)

    def _prompt_limit(self, run: Run) -> int | None:
        """The most prompt tokens the next generation may take: the model's context less room for the reply,
        and what is left of `max_prompt_tokens`."""
        limit = None
        context = self._chat.context_length(run.model)
        if context is not None:
            limit = context - min(REPLY_ROOM, context // 4)
        if run.max_prompt_tokens is not None:
            left = run.max_prompt_tokens - run.prompt_tokens
            limit = left if limit is None else min(limit, left)
        return limit

    def _request(
        self,
        run: Run,
        messages: ChatMessages,
        tools_called: bool,
        may_search: bool,
        may_code: bool,
        budget: bool = True,
    ) -> ChatCompletionRequest:
        """The chat request for a turn; `budget` False leaves out the run's completion budget (for measuring a
        prompt: the budget is fitted to the room the chosen prompt leaves)."""
        tools = _function_tools(run)
        if may_search and _offers_search(run):
            tools.append(file_search.FUNCTION)
        if may_code and _offers_code(run):
            tools.append(code_interpreter.FUNCTION)
        body: dict[str, Any] = {
            "model": run.model,
            "messages": messages or [{"role": "user", "content": ""}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if run.temperature is not None:
            body["temperature"] = run.temperature
        if run.top_p is not None:
            body["top_p"] = run.top_p
        if run.reasoning_effort is not None:
            body["reasoning_effort"] = run.reasoning_effort
        if budget and run.max_completion_tokens is not None:
            body["max_completion_tokens"] = max(1, run.max_completion_tokens - run.completion_tokens)
        response_format = json.loads(run.response_format_json)
        if isinstance(response_format, dict) and response_format.get("type") != "text":
            body["response_format"] = response_format
        if tools:
            choice = json.loads(run.tool_choice_json)
            if isinstance(choice, dict) and choice.get("type") == file_search.TOOL_NAME:
                choice = {"type": "function", "function": {"name": file_search.TOOL_NAME}}
            elif isinstance(choice, dict) and choice.get("type") == code_interpreter.TOOL_TYPE:
                choice = {"type": "function", "function": {"name": code_interpreter.FUNCTION_NAME}}
            if tools_called and choice != "none":
                choice = "auto"
            body["tools"] = tools
            body["tool_choice"] = choice
            body["parallel_tool_calls"] = run.parallel_tool_calls
        return ChatCompletionRequest.model_validate(body)

    async def _open(
        self, request: ChatCompletionRequest, prepared: Any, tally: TokenTally
    ) -> AsyncIterator[dict[str, Any]]:
        """The chat stream; a full engine queue is waited out (a run is work the client already handed over)."""
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        while True:
            try:
                return self._chat.stream(request, prepared, tally)
            except OasisError as exc:
                if exc.status != 429 or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(float(exc.headers.get("retry-after", "1")))

    async def _generate(
        self, run: Run, owner: str, events: RunEvents, chunks: AsyncIterator[dict[str, Any]], turn: _Turn
    ) -> bool:
        """Streams the reply into the turn; True when the run was cancelled meanwhile."""
        cancel = self._cancels.setdefault(run.id, asyncio.Event())
        watcher = asyncio.create_task(self._watch_cancel(run.seq, owner, cancel))
        consumer = asyncio.create_task(self._consume(run, owner, events, chunks, turn))
        stopper = asyncio.create_task(cancel.wait())
        try:
            done, _ = await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if consumer not in done:
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
                return True
            consumer.result()  # raises what the generation raised
            return False
        finally:
            stopper.cancel()
            watcher.cancel()
            self._cancels.pop(run.id, None)
            # This task cancelled (a shutdown): the consumer stops before its stream is closed under it
            consumer.cancel()
            for task in (watcher, consumer):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await close_chunks(chunks)  # frees the engine slot when the run stopped early
            # Stopped before the usage chunk (a cancel, an error): what was generated counts all the same
            turn.completion_tokens = max(turn.completion_tokens, turn.tally.completion_tokens)

    async def _watch_cancel(self, seq: int, owner: str, cancel: asyncio.Event) -> None:
        """Looks for a cancel (or a deleted thread) written by another process, or the run taken over by another
        worker (this one was too slow to renew its lease): either way, this generation stops."""
        while not cancel.is_set():
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            if not await self._still_ours(seq, owner, "in_progress"):
                cancel.set()

    async def _consume(
        self, run: Run, owner: str, events: RunEvents, chunks: AsyncIterator[dict[str, Any]], turn: _Turn
    ) -> None:
        coding = _offers_code(run)
        async for chunk in chunks:
            if chunk.get("usage"):
                turn.prompt_tokens = chunk["usage"]["prompt_tokens"]
                turn.completion_tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    await self._add_text(run, owner, events, turn, delta["content"])
                for call in delta.get("tool_calls") or []:
                    entry = turn.calls.setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                    entry["id"] = call.get("id") or entry["id"]
                    function = call.get("function") or {}
                    entry["name"] += function.get("name") or ""
                    entry["arguments"] += function.get("arguments") or ""
                    # A call's name comes whole in its first delta, as OpenAI's models send it.
                    if not entry["id"] or not entry["name"]:
                        continue
                    if entry["name"] == code_interpreter.FUNCTION_NAME and coding:
                        await self._close_message_before_tools(run, owner, events, turn)
                        self._stream_code(run, events, turn, call["index"], entry)
                    elif turn.streams_functions:
                        await self._close_message_before_tools(run, owner, events, turn)
                        self._stream_function(run, events, turn, call["index"], entry)
                if choice.get("finish_reason"):
                    turn.finish_reason = choice["finish_reason"]

    async def _close_message_before_tools(self, run: Run, owner: str, events: RunEvents, turn: _Turn) -> None:
        """Ends the reply's message and its step where its tool calls begin, before their step opens (as OpenAI's
        steps follow one another: a client's handler reads a step's end as its tool calls' end), whatever then
        becomes of the calls. The rows are written ended now, so that a client polling the thread while code runs
        sees the message as a stream shows it; a crash before the turn is recorded removes them (see
        `_drop_unfinished`)."""
        if turn.message is None or turn.message_closed:
            return
        if turn.citer is not None:
            await self._add_segments(run, owner, events, turn, turn.citer.end())
        self._close_message(turn, now(), None)
        turn.message_closed = True
        # shown ended first: a cancel or a failure meanwhile stores it as shown, and does not show it again
        self._emit_closed(events, turn)
        async with self._db.session() as session:
            await self._held(session, run.seq, owner, ("in_progress",))
            await self._store_closed(session, turn)
            await session.commit()

    def _stream_code(self, run: Run, events: RunEvents, turn: _Turn, index: int, entry: dict[str, Any]) -> None:
        """Shows the code of a code_interpreter call as it is written, on the tool step it will be recorded on
        (the step's row is written once the code has run). A client appends what deltas bring, so each call's
        id comes once, in its first delta."""
        code = partial_code(entry["arguments"])
        seen = turn.streamed_code.get(index)
        entries: list[dict[str, Any]] = []
        if seen is None:
            if turn.tool_step_id is None:
                opened = _new_step(run, now(), {"type": "tool_calls", "tool_calls": []})
                turn.tool_step_id = opened.id
                events.emit("thread.run.step.created", step_to_wire(opened))
                events.emit("thread.run.step.in_progress", step_to_wire(opened))
            # Built-in calls before this one in the generation (searches) take their places in the step first.
            for other, call in sorted(turn.calls.items()):
                if other < index and other not in turn.streamed_ids and call["name"] == file_search.TOOL_NAME:
                    turn.streamed_ids[other] = call["id"]
                    entries.append(
                        {
                            "index": self._place_of(turn, other),
                            "id": call["id"],
                            "type": "file_search",
                            "file_search": {},
                        }
                    )
            turn.streamed_code[index] = ""
            turn.streamed_ids[index] = entry["id"]
        piece = _rest(code, seen or "")
        if seen is not None and not piece:
            return
        turn.streamed_code[index] = code
        place = self._place_of(turn, index)
        deltas = []
        if seen is None:
            # The call's first delta opens it, empty, as OpenAI's does: the SDK hands a call's first delta to
            # `on_tool_call_created` and only the later ones to `on_tool_call_delta`, where clients print code.
            opening = {"index": place, "id": entry["id"], "type": code_interpreter.TOOL_TYPE}
            opening[code_interpreter.TOOL_TYPE] = {"input": "", "outputs": []}
            deltas.append([*entries, opening])
        if piece:
            deltas.append(
                [{"index": place, "type": code_interpreter.TOOL_TYPE, code_interpreter.TOOL_TYPE: {"input": piece}}]
            )
        for calls in deltas:
            _emit_step_delta(events, turn.tool_step_id, calls)

    def _stream_function(self, run: Run, events: RunEvents, turn: _Turn, index: int, entry: dict[str, Any]) -> None:
        """Shows a function call as it is written, on the step that will ask for its output (the step's row is
        written when the generation ends): its opening delta, then its arguments as they come, as OpenAI streams
        them. A client hears a delta for another call as that call's start, so pieces of a call that come after a
        later call opened (an upstream's interleaved calls) wait for the generation's end."""
        step = turn.function_step
        if step is None:
            step = turn.function_step = _new_step(run, now(), {"type": "tool_calls", "tool_calls": []})
            events.emit("thread.run.step.created", step_to_wire(step))
            events.emit("thread.run.step.in_progress", step_to_wire(step))
        place = sum(1 for other in turn.calls if other < index)  # all of this generation's calls are functions
        shown = turn.streamed_functions.get(index)
        if shown is None:
            shown = turn.streamed_functions[index] = {"id": entry["id"], "name": entry["name"], "arguments": ""}
            _emit_step_delta(events, step.id, [{"index": place, **_function_call(shown)}])
        elif index != max(turn.streamed_functions):
            return
        if piece := entry["arguments"][len(shown["arguments"]) :]:
            shown["arguments"] = entry["arguments"]
            _emit_step_delta(events, step.id, [{"index": place, "type": "function", "function": {"arguments": piece}}])

    @classmethod
    def _drop_streamed_steps(
        cls,
        run: Run,
        events: RunEvents,
        turn: _Turn,
        error: str | None = None,
        keep_built_in: bool = False,
        keep_functions: bool = False,
    ) -> None:
        """Ends the steps a stream opened for calls that will not run (the built-in tools' one and the functions'
        one, but those kept): cancelled (a cancel, or cut off by the budget), or failed with the run (`error`, its
        last_error). Their rows wait in `turn.dropped_steps` for the turn's next write to store them (a rolled
        back one leaves them there), so that a step a stream announced can be retrieved, with the calls as the
        stream showed them."""
        if not keep_built_in and turn.tool_step_id is not None:
            shown: list[dict[str, Any]] = []
            for index, call_id in sorted(turn.streamed_ids.items()):
                if index in turn.streamed_code:
                    code = {"input": turn.streamed_code[index], "outputs": []}
                    shown.append({"id": call_id, "type": code_interpreter.TOOL_TYPE, code_interpreter.TOOL_TYPE: code})
                else:
                    shown.append({"id": call_id, "type": "file_search", "file_search": {}})
            step = _new_step(run, now(), {"type": "tool_calls", "tool_calls": shown})
            step.id = turn.tool_step_id
            turn.tool_step_id = None
            turn.dropped_steps.append(cls._end_dropped(events, step, error))
        if not keep_functions and turn.function_step is not None:
            step = turn.function_step
            calls = [_function_call(call) for _, call in sorted(turn.streamed_functions.items())]
            step.step_details_json = json.dumps({"type": "tool_calls", "tool_calls": calls})
            turn.function_step = None
            turn.dropped_steps.append(cls._end_dropped(events, step, error))

    @staticmethod
    def _end_dropped(events: RunEvents, step: RunStep, error: str | None) -> RunStep:
        """`step` ended cancelled, or failed with `error`, and shown so."""
        if error is None:
            step.status, step.cancelled_at = "cancelled", now()
        else:
            step.status, step.failed_at, step.last_error_json = "failed", now(), error
        events.emit(f"thread.run.step.{step.status}", step_to_wire(step))
        return step

    @staticmethod
    def _place_of(turn: _Turn, index: int) -> int:
        """Where the generation's call `index` sits in its built-in tools' step."""
        built_in_names = (file_search.TOOL_NAME, code_interpreter.FUNCTION_NAME)
        return sum(1 for other, call in turn.calls.items() if other < index and call["name"] in built_in_names)

    async def _add_text(self, run: Run, owner: str, events: RunEvents, turn: _Turn, piece: str) -> None:
        segments = turn.citer.feed(piece) if turn.citer is not None else [Segment(piece)]
        await self._add_segments(run, owner, events, turn, segments)

    async def _add_segments(
        self, run: Run, owner: str, events: RunEvents, turn: _Turn, segments: list[Segment]
    ) -> None:
        """Appends text to the reply (opening its message first), each citation marker with its annotation. Text a
        model writes after its tool calls began has no message to go to (that one ended): it is not kept."""
        if turn.message_closed:
            return
        for segment in segments:
            first = turn.message is None
            if first:
                await self._open_message(run, owner, events, turn)
            assert turn.message is not None
            text: dict[str, Any] = {"value": segment.text}
            if segment.source is not None:
                annotation = {
                    "type": "file_citation",
                    "text": segment.text,
                    "start_index": len(turn.text),
                    "end_index": len(turn.text) + len(segment.text),
                    "file_citation": {"file_id": segment.source.file_id, "quote": segment.quote},
                }
                turn.annotations.append(annotation)
                text["annotations"] = [{"index": len(turn.annotations) - 1, **annotation}]
            elif first:
                text["annotations"] = []
            turn.text += segment.text
            events.emit(
                "thread.message.delta",
                {
                    "id": turn.message.id,
                    "object": "thread.message.delta",
                    "delta": {"content": [{"index": 0, "type": "text", "text": text}]},
                },
            )

    async def _open_message(self, run: Run, owner: str, events: RunEvents, turn: _Turn) -> None:
        """The message-creation step and its (still empty) message, written before the first text is shown."""
        stamp = now()
        message = ThreadMessage(
            id=new_id("msg_"),
            project_id=run.project_id,
            thread_id=run.thread_id,
            created_at=stamp,
            role="assistant",
            content_json="[]",
            attachments_json="[]",
            metadata_json="{}",
            assistant_id=run.assistant_id,
            run_id=run.id,
            status="in_progress",
        )
        step = _new_step(run, stamp, {"type": "message_creation", "message_creation": {"message_id": message.id}})
        async with self._db.session() as session:
            step.after_message_seq = await thread_rows.newest_message_seq(session, run.thread_id)
            await self._held(session, run.seq, owner, ("in_progress",))
            # the steps a stream ended before this message first: steps are listed in the order they were shown
            session.add_all([*_unstored(turn.dropped_steps), message, step])
            await session.commit()
        turn.dropped_steps.clear()
        turn.message, turn.step = message, step
        events.emit("thread.run.step.created", step_to_wire(step))
        events.emit("thread.run.step.in_progress", step_to_wire(step))
        events.emit("thread.message.created", message_to_wire(message))
        events.emit("thread.message.in_progress", message_to_wire(message))

    async def _finish(self, run: Run, owner: str, events: RunEvents, turn: _Turn) -> str:
        try:
            return await self._record(run, owner, events, turn)
        except _Stop:
            # The run was cancelled as the reply ended: what was written is kept, as for any cancel.
            if await self._still_ours(run.seq, owner, "cancelling"):
                await self._cancelled(run, owner, events, turn)
                return "cancelled"
            raise

    async def _record(self, run: Run, owner: str, events: RunEvents, turn: _Turn) -> str:
        cut = turn.finish_reason == "length"  # by the run's budget, or by the room the context left
        budget_hit = (
            cut
            and run.max_completion_tokens is not None
            and run.completion_tokens + turn.completion_tokens >= run.max_completion_tokens
        )
        # Calls cut off are half-written: the run does not ask for them (and ends incomplete when the budget cut).
        calls = [] if cut else [turn.calls[index] for index in sorted(turn.calls)]
        turn.calls = {index: call for index, call in enumerate(calls)}
        searching, coding = _offers_search(run), _offers_code(run)
        built_in = [
            call
            for call in calls
            if (searching and call["name"] == file_search.TOOL_NAME)
            or (coding and call["name"] == code_interpreter.FUNCTION_NAME)
        ]
        function_calls = [call for call in calls if call not in built_in]
        # Streamed calls cut off by the budget: their steps end (cancelled) before anything else opens
        self._drop_streamed_steps(run, events, turn, keep_built_in=bool(built_in), keep_functions=bool(function_calls))
        if turn.citer is not None and turn.message is not None and not turn.message_closed:
            await self._add_segments(run, owner, events, turn, turn.citer.end())
        if not calls and turn.message is None:
            await self._open_message(run, owner, events, turn)  # an empty reply is still the run's message
        # Run before the transaction that records them: a crash before it runs them again (a search is harmless
        # to repeat; a code run's output files keep the ids of the first attempt).
        performed: list[SearchCall | CodeCall] = []
        for call in built_in:
            if call["name"] == file_search.TOOL_NAME:
                number = turn.searches_before + sum(isinstance(done, SearchCall) for done in performed)
                performed.append(await self._search(run, call, turn, number))
                continue
            number = turn.code_runs + sum(isinstance(done, CodeCall) for done in performed)
            code = code_of(call["arguments"])
            if number >= MAX_CODE_RUNS_PER_RUN:  # more calls in one generation than the run may make
                note = f"Not run: a run runs code at most {MAX_CODE_RUNS_PER_RUN} times."
                performed.append(CodeCall(call["id"], code, [{"type": "logs", "logs": note}]))
            else:
                performed.append(await self._code.run(run, call["id"], code, number))
        stamp = now()
        built_in_step: RunStep | None = None
        tool_step: RunStep | None = None
        async with self._db.session() as session:
            await self._held(session, run.seq, owner, ("in_progress",))
            session.add_all(_unstored(turn.dropped_steps))
            if turn.message is not None:
                if not turn.message_closed:
                    self._close_message(turn, stamp, "max_tokens" if cut else None)
                elif not performed and not function_calls and turn.step is not None:
                    # its code call cut off: no tool step counts the generation's tokens, so its message's does
                    turn.step.prompt_tokens, turn.step.completion_tokens = turn.prompt_tokens, turn.completion_tokens
                await self._store_closed(session, turn)
            newest = await thread_rows.newest_message_seq(session, run.thread_id)
            if performed:
                built_in_step = _new_step(
                    run, stamp, {"type": "tool_calls", "tool_calls": [done.stored() for done in performed]}
                )
                built_in_step.id = turn.tool_step_id or built_in_step.id
                built_in_step.status, built_in_step.completed_at = "completed", stamp
                built_in_step.after_message_seq = newest
                built_in_step.prompt_tokens = turn.prompt_tokens
                built_in_step.completion_tokens = turn.completion_tokens
                session.add(built_in_step)
            values: dict[str, Any]
            if function_calls:
                tool_step = _new_step(
                    run,
                    stamp,
                    {
                        "type": "tool_calls",
                        "tool_calls": [_function_call(call) for call in function_calls],
                    },
                )
                if turn.function_step is not None:  # the step its stream opened
                    tool_step.id, tool_step.created_at = turn.function_step.id, turn.function_step.created_at
                tool_step.after_message_seq = newest
                # The generation's tokens are counted once: on the built-in tools' step when it also made one.
                tool_step.prompt_tokens = 0 if performed else turn.prompt_tokens
                tool_step.completion_tokens = 0 if performed else turn.completion_tokens
                session.add(tool_step)
                values = {
                    "status": "requires_action",
                    "attempts": 0,  # attempts count the leases of one stretch of work, not of the whole run
                    "required_action_json": json.dumps(
                        {
                            "type": "submit_tool_outputs",
                            "submit_tool_outputs": {
                                "tool_calls": [
                                    {
                                        "id": call["id"],
                                        "type": "function",
                                        "function": {"name": call["name"], "arguments": call["arguments"]},
                                    }
                                    for call in function_calls
                                ]
                            },
                        }
                    ),
                }
            elif performed:
                values = {}  # still in progress: the next turn answers with what the tools gave
            elif budget_hit:
                values = {"status": "incomplete", "incomplete_reason": "max_completion_tokens", "completed_at": None}
            else:
                values = {"status": "completed", "completed_at": stamp}
            values["prompt_tokens"] = run.prompt_tokens + turn.prompt_tokens
            values["completion_tokens"] = run.completion_tokens + turn.completion_tokens
            if not await run_rows.update_held(session, run.seq, owner, ("in_progress",), values):
                await session.rollback()
                raise _Stop
            await session.commit()
        turn.ended = True
        turn.dropped_steps.clear()
        if not turn.message_closed:
            self._emit_closed(events, turn)
        if built_in_step is not None:
            streamed = {call_id: turn.streamed_code.get(index) for index, call_id in turn.streamed_ids.items()}
            self._emit_tool_step(events, built_in_step, streamed if turn.tool_step_id is not None else None)
        if tool_step is not None:
            shown: dict[str, str | None] = {
                call["id"]: call["arguments"] for _, call in sorted(turn.streamed_functions.items())
            }
            self._emit_tool_step(events, tool_step, shown if turn.function_step is not None else None)
        if performed and not function_calls:
            return "tools_ran"
        final = await self._run(run.seq)
        name = {"requires_action": "thread.run.requires_action", "incomplete": "thread.run.incomplete"}.get(
            final.status, "thread.run.completed"
        )
        events.emit(name, run_to_wire(final))
        return final.status

    async def _search(self, run: Run, call: dict[str, Any], turn: _Turn, number: int) -> SearchCall:
        """Runs a file_search call; `number` is its `n` in the markers (the thread's searches before it)."""
        settings = file_search.tool_settings(json.loads(run.tools_json)) or {}
        queries = queries_of(call["arguments"], turn.last_user_text)
        ranking, results = await self._searcher.run(run, queries, settings)
        return SearchCall(call["id"], queries, number, ranking, results)

    @staticmethod
    def _emit_tool_step(events: RunEvents, step: RunStep, streamed: dict[str, str | None] | None = None) -> None:
        """A tool-call step as a stream shows it: opened empty, a delta a call, then its end (when over).
        `streamed` names the calls already shown as they were written (with the code or the arguments shown, the
        last shown last): the step is open already, and their delta brings only what is new (a client appends
        what deltas bring): the code's or the arguments' end where the stored one goes on from what was shown,
        outputs, search results.

        One delta a call, as OpenAI streams them: the SDK hands a delta for a call other than the one before to
        `on_tool_call_created` (and ends the one before), and one for the same call to `on_tool_call_delta`. So a
        function call's arguments come after its opening delta, and the call shown last gets its outputs first."""
        shown = step_to_wire(step, events.include_contents)
        deltas: list[dict[str, Any]] = []
        for index, call in enumerate(shown["step_details"]["tool_calls"]):
            kind = call["type"]
            if kind == code_interpreter.TOOL_TYPE:
                # each output's place in the call's list, as the SDK's typed deltas carry it
                outputs = [{"index": place, **output} for place, output in enumerate(call[kind]["outputs"])]
                call = {**call, kind: {**call[kind], "outputs": outputs}}
            if streamed is not None and call["id"] in streamed:
                if kind == code_interpreter.TOOL_TYPE:
                    rest = _rest(call[kind]["input"], streamed[call["id"]] or "")
                    call = {"type": kind, kind: {**({"input": rest} if rest else {}), "outputs": call[kind]["outputs"]}}
                elif kind == "function":
                    if not (rest := _rest(call[kind]["arguments"], streamed[call["id"]] or "")):
                        continue  # shown whole as it was written; its output comes when the client sends it
                    call = {"type": kind, kind: {"arguments": rest}}
                else:
                    call = {"type": kind, kind: call[kind]}
                deltas.append({"index": index, **call})
            elif kind == "function" and call["function"]["arguments"]:
                deltas.append({"index": index, **call, kind: {**call[kind], "arguments": ""}})
                deltas.append({"index": index, "type": kind, kind: {"arguments": call[kind]["arguments"]}})
            else:
                deltas.append({"index": index, **call})
        if streamed is None:
            empty = {**shown, "step_details": {"type": "tool_calls", "tool_calls": []}}
            if step.status == "completed":
                empty.update(status="in_progress", completed_at=None, usage=None)
            events.emit("thread.run.step.created", empty)
            events.emit("thread.run.step.in_progress", empty)
        elif streamed:
            last_shown = list(streamed)[-1]
            places = [call["id"] for call in shown["step_details"]["tool_calls"]]
            if last_shown in places:
                current = places.index(last_shown)
                deltas.sort(key=lambda delta: delta["index"] != current)  # stable: the rest keep their order
        for delta in deltas:
            _emit_step_delta(events, step.id, [delta])
        if step.status == "completed":
            events.emit("thread.run.step.completed", shown)

    def _close_message(self, turn: _Turn, stamp: int, incomplete_reason: str | None) -> None:
        assert turn.message is not None and turn.step is not None
        annotations = sorted(turn.annotations + _file_paths(turn.text, turn.code_files), key=lambda a: a["start_index"])
        content: list[dict[str, Any]] = [{"type": "text", "text": {"value": turn.text, "annotations": annotations}}]
        # Figures the run's code made are shown by the message that follows them, as OpenAI's are.
        content += [{"type": "image_file", "image_file": {"file_id": file_id}} for file_id in turn.pending_images]
        turn.message.content_json = json.dumps(content)
        if incomplete_reason is None:
            turn.message.status, turn.message.completed_at = "completed", stamp
        else:
            turn.message.status, turn.message.incomplete_at = "incomplete", stamp
            turn.message.incomplete_reason = incomplete_reason
        # A message cut by the token budget is still a finished step; one cut by a cancel or a failure is not.
        if incomplete_reason == "run_cancelled":
            turn.step.status, turn.step.cancelled_at = "cancelled", stamp
        elif incomplete_reason == "run_failed":
            turn.step.status, turn.step.failed_at = "failed", stamp
        else:
            turn.step.status, turn.step.completed_at = "completed", stamp
        if turn.step.prompt_tokens is None:
            # A turn that also called tools counts its tokens on the tool step.
            counted = not turn.calls
            turn.step.prompt_tokens = turn.prompt_tokens if counted else 0
            turn.step.completion_tokens = turn.completion_tokens if counted else 0

    @staticmethod
    def _emit_closed(events: RunEvents, turn: _Turn) -> None:
        """The message's end and its step's. What the text's deltas did not bring comes first, as deltas (the SDK
        tells a handler of what it saw in deltas): the run's figures as image parts, and `file_path` annotations
        (after the citations shown, in the places the SDK's snapshot gives them)."""
        if turn.message is None or turn.step is None:
            return
        content = json.loads(turn.message.content_json)
        text = content[0]["text"] if content and content[0]["type"] == "text" else None
        paths = [note for note in (text or {}).get("annotations", []) if note["type"] == "file_path"]
        parts: list[dict[str, Any]] = []
        if paths or not turn.text:
            # A message the stream wrote no text to gets its (empty) text part too: the SDK keeps its place in
            # the content from message to message, and reads that place when the message ends.
            notes = [{"index": len(turn.annotations) + place, **note} for place, note in enumerate(paths)]
            parts.append({"index": 0, "type": "text", "text": {"value": "", "annotations": notes}})
        parts += [{"index": place, **part} for place, part in enumerate(content) if part["type"] == "image_file"]
        if parts:
            events.emit(
                "thread.message.delta",
                {"id": turn.message.id, "object": "thread.message.delta", "delta": {"content": parts}},
            )
        message_event = (
            "thread.message.completed" if turn.message.status == "completed" else "thread.message.incomplete"
        )
        events.emit(message_event, message_to_wire(turn.message))
        step_event = f"thread.run.step.{turn.step.status}"  # completed, cancelled or failed
        events.emit(step_event, step_to_wire(turn.step))

    # --- ends ------------------------------------------------------------------------------------------------------

    async def _incomplete(self, run: Run, owner: str, events: RunEvents, reason: str) -> str:
        await self._write(run.seq, owner, ("in_progress",), {"status": "incomplete", "incomplete_reason": reason})
        events.emit("thread.run.incomplete", run_to_wire(await self._run(run.seq)))
        return "incomplete"

    async def _cancelled(self, run: Run, owner: str, events: RunEvents, turn: _Turn | None) -> None:
        """Cancelling → cancelled: the partial message is kept `incomplete`, open steps are cancelled."""
        events.emit("thread.run.cancelling", {**run_to_wire(run), "status": "cancelling"})
        stamp = now()
        async with self._db.session() as session:
            if not await run_rows.update_held(
                session,
                run.seq,
                owner,
                ("in_progress", "cancelling", "queued", "requires_action"),
                {"status": "cancelled", "cancelled_at": stamp},
            ):
                await session.rollback()
                raise _Stop
            if turn is not None and not turn.ended:
                self._drop_streamed_steps(run, events, turn)
                session.add_all(_unstored(turn.dropped_steps))
            if turn is not None and turn.message is not None:
                if not turn.message_closed:  # else it ended where its tool calls began, and was shown so
                    self._close_message(turn, stamp, "run_cancelled")
                await self._store_closed(session, turn)
            if turn is not None and not turn.ended:  # what the generation consumed counts, a message begun or not
                run_prompt = run.prompt_tokens + turn.prompt_tokens
                await session.execute(
                    update(Run)
                    .where(Run.seq == run.seq)
                    .values(prompt_tokens=run_prompt, completion_tokens=run.completion_tokens + turn.completion_tokens)
                )
            await session.execute(
                update(RunStep)
                .where(RunStep.run_id == run.id, RunStep.status == "in_progress")
                .values(status="cancelled", cancelled_at=stamp)
            )
            # A message left open by an attempt that is gone (a crash, then the cancel) ends incomplete too.
            await session.execute(
                update(ThreadMessage)
                .where(ThreadMessage.run_id == run.id, ThreadMessage.status == "in_progress")
                .values(status="incomplete", incomplete_at=stamp, incomplete_reason="run_cancelled")
            )
            await session.commit()
        if turn is not None and not turn.message_closed:
            self._emit_closed(events, turn)
        events.emit("thread.run.cancelled", run_to_wire(await self._run(run.seq)))

    async def _cancelled_meanwhile(self, seq: int, owner: str, events: RunEvents, turn: _Turn | None) -> bool:
        """Ends the run `cancelled` when a cancel is why a write of ours failed (and the lease is still ours); the
        turn in hand, if any, counts its tokens and keeps its partial message as a cancel seen mid-stream does."""
        if not await self._still_ours(seq, owner, "cancelling"):
            return False
        try:
            await self._cancelled(await self._run(seq), owner, events, turn)
        except _Stop:
            return False
        return True

    async def _still_ours(self, seq: int, owner: str, status: str) -> bool:
        async with self._db.session() as session:
            found = await session.scalar(
                select(Run.seq).where(
                    Run.seq == seq, Run.lease_owner == owner, Run.status == status, Run.deleted_at.is_(None)
                )
            )
        return found is not None

    @staticmethod
    async def _store_closed(session: Any, turn: _Turn) -> None:
        """Writes the closed message and step field by field: a whole-row merge would undo a metadata change
        or a delete made meanwhile."""
        message, step = turn.message, turn.step
        assert message is not None and step is not None
        await session.execute(
            update(ThreadMessage)
            .where(ThreadMessage.id == message.id, ThreadMessage.deleted_at.is_(None))
            .values(
                content_json=message.content_json,
                status=message.status,
                completed_at=message.completed_at,
                incomplete_at=message.incomplete_at,
                incomplete_reason=message.incomplete_reason,
            )
        )
        await session.execute(
            update(RunStep)
            .where(RunStep.id == step.id, RunStep.deleted_at.is_(None))
            .values(
                status=step.status,
                completed_at=step.completed_at,
                cancelled_at=step.cancelled_at,
                failed_at=step.failed_at,
                last_error_json=step.last_error_json,
                prompt_tokens=step.prompt_tokens,
                completion_tokens=step.completion_tokens,
            )
        )

    async def _expire(self, run: Run, owner: str, events: RunEvents) -> None:
        stamp = now()
        async with self._db.session() as session:
            if not await run_rows.update_held(
                session, run.seq, owner, ("queued", "requires_action"), {"status": "expired"}
            ):
                await session.rollback()
                raise _Stop
            await session.execute(
                update(RunStep)
                .where(RunStep.run_id == run.id, RunStep.status == "in_progress")
                .values(status="expired", expired_at=stamp)
            )
            await session.commit()
        events.emit("thread.run.expired", run_to_wire(await self._run(run.seq)))

    async def _fail(
        self, seq: int, owner: str, events: RunEvents, code: str, message: str, turn: _Turn | None = None
    ) -> None:
        """→ failed; the message `turn` was writing keeps its text, `incomplete` (run_failed), as a cancel's does."""
        stamp = now()
        run = await self._run(seq)
        # Only a message still being written: one a turn ended and stored is left as it was
        closing = turn is not None and turn.message is not None and turn.step is not None and not turn.ended
        async with self._db.session() as session:
            if not await run_rows.update_held(
                session,
                seq,
                owner,
                ("queued", "in_progress"),
                {"status": "failed", "failed_at": stamp, "last_error_json": _error(code, message)},
            ):
                await session.rollback()
                return
            if turn is not None and not turn.ended:
                self._drop_streamed_steps(run, events, turn, _error(code, message))
                session.add_all(_unstored(turn.dropped_steps))
                # What the generation consumed before it failed counts, as a cancelled one's does
                await session.execute(
                    update(Run)
                    .where(Run.seq == run.seq)
                    .values(
                        prompt_tokens=run.prompt_tokens + turn.prompt_tokens,
                        completion_tokens=run.completion_tokens + turn.completion_tokens,
                    )
                )
            if closing:
                assert turn is not None and turn.step is not None
                if not turn.message_closed:  # else it ended where its tool calls began, and was shown so
                    self._close_message(turn, stamp, "run_failed")
                    turn.step.last_error_json = _error(code, message)
                await self._store_closed(session, turn)
            await session.execute(
                update(RunStep)
                .where(RunStep.run_id == run.id, RunStep.status == "in_progress")
                .values(status="failed", failed_at=stamp, last_error_json=_error(code, message))
            )
            await session.execute(
                update(ThreadMessage)
                .where(ThreadMessage.run_id == run.id, ThreadMessage.status == "in_progress")
                .values(status="incomplete", incomplete_at=stamp, incomplete_reason="run_failed")
            )
            await session.commit()
        if closing:
            assert turn is not None
            if not turn.message_closed:
                self._emit_closed(events, turn)
        events.emit("thread.run.failed", run_to_wire(await self._run(seq)))

    # --- rows ----------------------------------------------------------------------------------------------------

    async def _drop_unfinished(self, run: Run, owner: str) -> None:
        """A turn cut off by a crash is generated again: its message and step go first, the message unfinished or
        ended where the turn's tool calls began (then stored ended, though the turn's calls never were: it is newer
        than the thread's newest message when the run's last recorded tool step was stored)."""
        stamp = now()
        async with self._db.session() as session:
            await self._held(session, run.seq, owner, ("in_progress",))
            recorded = await session.scalar(
                select(func.max(RunStep.after_message_seq)).where(
                    RunStep.run_id == run.id, RunStep.type == "tool_calls", RunStep.deleted_at.is_(None)
                )
            )
            newer = true() if recorded is None else ThreadMessage.seq > recorded
            # a message's creation step is stored with `after_message_seq` the newest message before it
            step_newer = true() if recorded is None else RunStep.after_message_seq >= recorded
            await session.execute(
                update(ThreadMessage)
                .where(ThreadMessage.run_id == run.id, ThreadMessage.deleted_at.is_(None))
                .where(or_(ThreadMessage.status == "in_progress", newer))
                .values(deleted_at=stamp)
            )
            await session.execute(
                update(RunStep)
                .where(RunStep.run_id == run.id, RunStep.type == "message_creation", RunStep.deleted_at.is_(None))
                .where(or_(RunStep.status == "in_progress", step_newer))
                .values(deleted_at=stamp)
            )
            await session.commit()

    async def _held(self, session: Any, seq: int, owner: str, statuses: tuple[str, ...]) -> None:
        """Checks, inside the caller's transaction, that the run is still ours and as expected."""
        # Writing the owner again changes nothing; the UPDATE's conditions are the check, and its row lock holds.
        if not await run_rows.update_held(session, seq, owner, statuses, {"lease_owner": owner}):
            await session.rollback()
            raise _Stop

    async def _write(self, seq: int, owner: str, statuses: tuple[str, ...], values: dict[str, Any]) -> None:
        async with self._db.session() as session:
            if not await run_rows.update_held(session, seq, owner, statuses, values):
                await session.rollback()
                raise _Stop
            await session.commit()

    async def _run(self, seq: int) -> Run:
        async with self._db.session() as session:
            run = await session.get(Run, seq)
        if run is None or run.deleted_at is not None:
            raise _Stop
        return run

    async def _release(self, seq: int, owner: str, cut_off: bool = False) -> None:
        """Frees the run's lease; `cut_off` by a shutdown, the lease does not count as an attempt either."""
        values = handed_back(Run) if cut_off else {"lease_owner": None, "lease_expires_at": None}
        with contextlib.suppress(Exception):
            async with self._db.session() as session:
                await session.execute(update(Run).where(Run.seq == seq, Run.lease_owner == owner).values(**values))
                await session.commit()


class RunRunner:
    """Leases runs for the worker loop and executes up to `concurrency` of them at once: runs are interactive,
    so one long run must not hold up the next."""

    def __init__(self, db: Database, executor: RunExecutor, lease_seconds: float, concurrency: int) -> None:
        self._db = db
        self._executor = executor
        self._lease_seconds = lease_seconds
        self.jobs = ConcurrentJobs(concurrency)
        waiting = or_(
            Run.status.in_(("queued", "in_progress", "cancelling")),
            # Past expires_at in whole seconds (the clock is fractional): the complement of what
            # submit_tool_outputs still accepts (expires_at >= now()), so no second belongs to both or neither.
            and_(Run.status == "requires_action", Run.expires_at + 1 <= database_now()),
        )
        self._claims = JobClaims(db, Run, [waiting, Run.deleted_at.is_(None)])

    async def run_next(self, owner: str) -> bool:
        if self.jobs.full:
            return False
        # Each execution holds the lease under a name of its own, so that its writes and its release can never
        # be mistaken for those of a later execution of the same run in this loop.
        holder = execution_name(owner)
        seq = await self._claims.lease_one(owner=holder, seconds=self._lease_seconds)
        if seq is None:
            return False
        self.jobs.start(self._executor.execute(seq, holder))
        return True

    def stop(self) -> None:
        self._executor.stop()

    async def close(self, grace_seconds: float = 2.0) -> None:
        """Lets runs in flight finish for a moment, then cancels them (handed back, another worker resumes them)."""
        self.stop()
        await self.jobs.close(grace_seconds)
