"""Runs and their steps: create (on a thread, or with a new thread), list, retrieve, modify, cancel, submit tool
outputs. A run's row is its job: a polled run waits for a worker to lease it; a streamed run is executed here,
by this process, under a lease it holds from the start, and its events are the stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from oasis.engines.registry import EngineRegistry
from oasis.errors import invalid_request, not_found
from oasis.protocol.assistants import (
    CreateRunRequest,
    CreateThreadAndRunRequest,
    CreateThreadRequest,
    ModifyRunRequest,
    SubmitToolOutputsRequest,
)
from oasis.services.assistants.assistants import AssistantService, ModelLoader, _no_loading, load_named
from oasis.services.assistants.code_interpreter import CodeInterpreter
from oasis.services.assistants.events import Event, EventQueue, RunEvents
from oasis.services.assistants.file_search import wants_contents
from oasis.services.assistants.prompt import image_part_of
from oasis.services.assistants.resources import (
    response_format_to_store,
    tool_choice_to_store,
    tool_resources_to_store,
    tools_to_store,
)
from oasis.services.assistants.threads import add_messages, new_thread, refuse_while_running, thread_row
from oasis.services.assistants.wire import run_to_wire, step_to_wire, thread_to_wire
from oasis.services.metadata import check_metadata
from oasis.services.models.engine_lookup import check_known
from oasis.services.vector_stores.service import VectorStoreService
from oasis.storage import runs as rows
from oasis.storage import threads as thread_rows
from oasis.storage.clock import new_id, now
from oasis.storage.db import Conflict, Database, Session
from oasis.storage.leases import execution_name, lease_until, process_name
from oasis.storage.pagination import Page, PageRequest
from oasis.storage.tables import Assistant, Run, RunStep, Thread

# A live run expires this long after it was created (OpenAI's ten minutes).
RUN_LIFETIME_SECONDS = 600

Execute = Callable[[int, str, RunEvents], Awaitable[None]]


async def _refuse_images(session: Session, run: Run, params: dict[str, str]) -> None:
    """A 400, as chat gives, when a user message the run would show its model has an image: the model would answer
    as if the image were not there. `params` names the messages this request wrote; with `last_messages`, only
    those messages count."""
    messages = await thread_rows.conversation(session, run.thread_id)
    kept = json.loads(run.truncation_json).get("last_messages")
    for message in messages[-kept:] if kept else messages:
        position = image_part_of(message)
        if position is not None:
            where = params.get(message.id)
            raise invalid_request(
                f"Message {message.id} has an image (content[{position}]) and model '{run.model}' reads text only: "
                "oasis's chat models do not see images. Delete the message, or keep it out with "
                "truncation_strategy last_messages.",
                param=f"{where}.content[{position}]" if where else "thread_id",
                code="image_parts_unsupported",
            )


def _already_running(thread_id: str) -> Exception:
    # Another request started a run on this thread between our check and our commit.
    return invalid_request(f"Thread {thread_id} already has an active run.", param="thread_id", code="run_active")


class RunService:
    def __init__(
        self,
        db: Database,
        registry: EngineRegistry,
        vector_stores: VectorStoreService,
        code_interpreter: CodeInterpreter,
        *,
        execute: Execute,
        cancel_here: Callable[[str], None],
        wake_workers: Callable[[], None],
        lease_seconds: float,
        load_model: ModelLoader = _no_loading,
    ) -> None:
        self._db = db
        self._registry = registry
        self._load_model = load_model
        self._vector_stores = vector_stores
        self._code_interpreter = code_interpreter
        self._execute = execute
        self._cancel_here = cancel_here
        self._wake_workers = wake_workers
        self._lease_seconds = lease_seconds
        # Streamed runs execute under this owner; a crash of this process lets a worker take them over.
        self._owner = process_name("api")
        self._streams: set[asyncio.Task[None]] = set()

    # --- create ------------------------------------------------------------------------------------------------

    async def create(
        self, project_id: str, thread_id: str, request: CreateRunRequest, include: list[str] | None = None
    ) -> dict[str, Any] | AsyncIterator[Event]:
        contents = wants_contents(include or [])
        try:
            run = await self._create(project_id, thread_id, request)
        except Conflict:
            raise _already_running(thread_id) from None
        self._vector_stores.wake()  # attached files to index
        return self._started(run, bool(request.stream), None, contents)

    async def _create(self, project_id: str, thread_id: str, request: CreateRunRequest) -> Run:
        await self._load_run_model(project_id, request)
        async with self._db.session() as session:
            thread = await thread_row(session, project_id, thread_id, lock=True)  # a message being added waits
            await refuse_while_running(session, thread_id, "Thread {thread} already has an active run {run}.")
            assistant = await AssistantService.row(session, project_id, request.assistant_id)
            run = await self._new_run(session, project_id, thread, assistant, request, request.stream)
            run.additional_instructions = request.additional_instructions
            extra = request.additional_messages or []
            added = await add_messages(
                session, project_id, thread_id, extra, "additional_messages", self._vector_stores
            )
            await _refuse_images(session, run, {row.id: f"additional_messages[{n}]" for n, row in enumerate(added)})
            await session.commit()
        return run

    async def create_thread_and_run(
        self, project_id: str, request: CreateThreadAndRunRequest
    ) -> dict[str, Any] | AsyncIterator[Event]:
        await self._load_run_model(project_id, request)
        async with self._db.session() as session:
            assistant = await AssistantService.row(session, project_id, request.assistant_id)
            thread = await new_thread(
                session, project_id, request.thread or CreateThreadRequest(), self._vector_stores, param="thread"
            )
            if request.tool_resources is not None:
                resources = await tool_resources_to_store(
                    session, project_id, request.tool_resources, self._vector_stores
                )
                # The store the thread's message attachments went into stays, unless these name another.
                for kind, value in json.loads(thread.tool_resources_json).items():
                    resources.setdefault(kind, value)
                thread.tool_resources_json = json.dumps(resources)
            run = await self._new_run(session, project_id, thread, assistant, request, request.stream)
            await session.flush()
            messages = await thread_rows.conversation(session, thread.id)
            await _refuse_images(session, run, {row.id: f"thread.messages[{n}]" for n, row in enumerate(messages)})
            await session.commit()
        self._vector_stores.wake()  # attached files to index
        return self._started(run, bool(request.stream), thread, False)

    async def _load_run_model(self, project_id: str, request: CreateRunRequest | CreateThreadAndRunRequest) -> None:
        """A fine-tune the run will use is loaded before the run is made (outside its transaction: loading takes
        seconds)."""
        model = request.model
        if model is None:
            async with self._db.session() as session:
                model = (await AssistantService.row(session, project_id, request.assistant_id)).model
        await load_named(self._load_model, project_id, model)

    async def _new_run(
        self,
        session: Session,
        project_id: str,
        thread: Thread,
        assistant: Assistant,
        request: CreateRunRequest | CreateThreadAndRunRequest,
        stream: bool | None,
    ) -> Run:
        model = request.model or assistant.model
        check_known(self._registry, model, in_body=True)
        tools = tools_to_store(request.tools) if request.tools is not None else json.loads(assistant.tools_json)
        for position, tool in enumerate(tools):
            if tool["type"] == "code_interpreter":
                # A run must not quietly answer without the tool its assistant relies on.
                param = f"tools[{position}]" if request.tools is not None else "assistant_id"
                await self._code_interpreter.check_available(param)
        response_format = (
            response_format_to_store(request.response_format)
            if request.response_format is not None
            else json.loads(assistant.response_format_json)
        )
        truncation = (
            request.truncation_strategy.model_dump()
            if request.truncation_strategy is not None
            else {"type": "auto", "last_messages": None}
        )
        stamp = now()
        run = Run(
            id=new_id("run_"),
            project_id=project_id,
            thread_id=thread.id,
            assistant_id=assistant.id,
            created_at=stamp,
            status="queued",
            model=model,
            instructions=request.instructions if request.instructions is not None else (assistant.instructions or ""),
            tools_json=json.dumps(tools),
            tool_resources_json=thread.tool_resources_json,
            metadata_json=json.dumps(check_metadata(request.metadata)),
            temperature=request.temperature if request.temperature is not None else assistant.temperature,
            top_p=request.top_p if request.top_p is not None else assistant.top_p,
            max_prompt_tokens=request.max_prompt_tokens,
            max_completion_tokens=request.max_completion_tokens,
            truncation_json=json.dumps(truncation),
            tool_choice_json=json.dumps(tool_choice_to_store(request.tool_choice, tools)),
            response_format_json=json.dumps(response_format),
            reasoning_effort=request.reasoning_effort or assistant.reasoning_effort,
            parallel_tool_calls=True if request.parallel_tool_calls is None else request.parallel_tool_calls,
            expires_at=stamp + RUN_LIFETIME_SECONDS,
            prompt_tokens=0,
            completion_tokens=0,
            attempts=0,
        )
        if stream:
            run.lease_owner = self._holder()
            # a SQL expression, evaluated at the flush: the attribute is not read back as a number afterwards
            run.lease_expires_at = lease_until(self._lease_seconds)
            run.attempts = 1
        session.add(run)
        return run

    def _holder(self) -> str:
        return execution_name(self._owner)

    def _started(
        self, run: Run, stream: bool, thread: Thread | None, include_contents: bool
    ) -> dict[str, Any] | AsyncIterator[Event]:
        if not stream:
            self._wake_workers()
            return run_to_wire(run)
        queue = EventQueue(include_contents)
        if thread is not None:
            queue.emit("thread.created", thread_to_wire(thread))
        queue.emit("thread.run.created", run_to_wire(run))
        queue.emit("thread.run.queued", run_to_wire(run))
        assert run.lease_owner is not None
        return self._stream(run.seq, run.lease_owner, queue)

    def _stream(self, seq: int, holder: str, queue: EventQueue) -> AsyncIterator[Event]:
        """Executes the run in a task of its own (a client that leaves does not stop it) and streams its events."""

        async def execute() -> None:
            try:
                await self._execute(seq, holder, queue)
            finally:
                queue.close()

        task = asyncio.create_task(execute())
        self._streams.add(task)
        task.add_done_callback(self._streams.discard)
        return aiter(queue)

    # --- read and modify ---------------------------------------------------------------------------------------

    async def retrieve(self, project_id: str, thread_id: str, run_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            return run_to_wire(await self._row(session, project_id, thread_id, run_id))

    async def list_runs(self, project_id: str, thread_id: str, page: PageRequest) -> Page[dict[str, Any]]:
        async with self._db.session() as session:
            await thread_row(session, project_id, thread_id)
            found = await rows.list_runs(session, thread_id, page)
        return Page(items=[run_to_wire(run) for run in found.items], has_more=found.has_more)

    async def modify(self, project_id: str, thread_id: str, run_id: str, request: ModifyRunRequest) -> dict[str, Any]:
        async with self._db.session() as session:
            run = await self._row(session, project_id, thread_id, run_id)
            if request.metadata is not None:
                await rows.set_metadata(session, run.seq, json.dumps(check_metadata(request.metadata)))
                await session.commit()
                await session.refresh(run)
            return run_to_wire(run)

    async def cancel(self, project_id: str, thread_id: str, run_id: str) -> dict[str, Any]:
        async with self._db.session() as session:
            run = await self._row(session, project_id, thread_id, run_id)
            if run.status in ("queued", "in_progress", "requires_action"):
                moved = await rows.move(session, run.seq, run.status, {"status": "cancelling"})
                await session.commit()
                if not moved:
                    return await self.cancel(project_id, thread_id, run_id)  # it moved on meanwhile: look again
                await session.refresh(run)
                self._cancel_here(run.id)
                self._wake_workers()
            elif run.status != "cancelling":
                raise invalid_request(f"Cannot cancel run with status '{run.status}'.", param="run_id")
            return run_to_wire(run)

    async def submit_tool_outputs(
        self, project_id: str, thread_id: str, run_id: str, request: SubmitToolOutputsRequest
    ) -> dict[str, Any] | AsyncIterator[Event]:
        async with self._db.session() as session:
            run = await self._row(session, project_id, thread_id, run_id)
            if run.status != "requires_action" or run.required_action_json is None:
                raise invalid_request(f"Runs in status '{run.status}' do not accept tool outputs.", param="run_id")
            if run.expires_at is not None and now() > run.expires_at:
                raise invalid_request("This run has expired and no longer accepts tool outputs.", param="run_id")
            pending = [call["id"] for call in json.loads(run.required_action_json)["submit_tool_outputs"]["tool_calls"]]
            outputs: dict[str, str] = {}
            for position, item in enumerate(request.tool_outputs):
                if item.tool_call_id is None:
                    raise invalid_request(
                        "Each tool output needs its 'tool_call_id'.", param=f"tool_outputs[{position}].tool_call_id"
                    )
                if item.tool_call_id not in pending:
                    raise invalid_request(
                        f"No tool call with id '{item.tool_call_id}' is waiting for output in this run.",
                        param=f"tool_outputs[{position}].tool_call_id",
                    )
                if item.tool_call_id in outputs:
                    raise invalid_request(
                        f"Tool call '{item.tool_call_id}' was given more than one output.",
                        param=f"tool_outputs[{position}].tool_call_id",
                    )
                outputs[item.tool_call_id] = item.output or ""
            missing = [call_id for call_id in pending if call_id not in outputs]
            if missing:
                raise invalid_request(
                    f"Expected tool outputs for call_ids {pending}, got {list(outputs)}.", param="tool_outputs"
                )
            step = await self._waiting_step(session, run)
            details = json.loads(step.step_details_json)
            for call in details["tool_calls"]:
                call["function"]["output"] = outputs.get(call["id"], "")
            step.step_details_json = json.dumps(details)
            step.status, step.completed_at = "completed", now()
            values: dict[str, Any] = {"status": "queued", "required_action_json": None}
            holder = self._holder()
            if request.stream:
                values.update(
                    lease_owner=holder,
                    lease_expires_at=lease_until(self._lease_seconds),
                    attempts=run.attempts + 1,
                )
            if not await rows.move_before_expiry(session, run.seq, "requires_action", values):
                await session.rollback()
                raise invalid_request("The run changed status while the outputs were submitted.", param="run_id")
            await session.commit()
            await session.refresh(run)
        if not request.stream:
            self._wake_workers()
            return run_to_wire(run)
        queue = EventQueue()
        queue.emit("thread.run.step.completed", step_to_wire(step))
        queue.emit("thread.run.queued", run_to_wire(run))
        return self._stream(run.seq, holder, queue)

    @staticmethod
    async def _waiting_step(session: Session, run: Run) -> RunStep:
        for step in reversed(await rows.run_steps(session, run.id)):
            if step.type == "tool_calls" and step.status == "in_progress":
                return step
        raise invalid_request("This run has no tool calls waiting for output.", param="run_id")

    async def list_steps(
        self, project_id: str, thread_id: str, run_id: str, page: PageRequest, include: list[str]
    ) -> Page[dict[str, Any]]:
        contents = wants_contents(include)
        async with self._db.session() as session:
            await self._row(session, project_id, thread_id, run_id)
            found = await rows.list_steps(session, run_id, page)
        return Page(items=[step_to_wire(step, contents) for step in found.items], has_more=found.has_more)

    async def retrieve_step(
        self, project_id: str, thread_id: str, run_id: str, step_id: str, include: list[str]
    ) -> dict[str, Any]:
        contents = wants_contents(include)
        async with self._db.session() as session:
            await self._row(session, project_id, thread_id, run_id)
            step = await rows.get_step(session, run_id, step_id)
            if step is None:
                raise not_found(f"No run step found with id '{step_id}'.", param="step_id")
            return step_to_wire(step, contents)

    @staticmethod
    async def _row(session: Session, project_id: str, thread_id: str, run_id: str) -> Run:
        await thread_row(session, project_id, thread_id)
        run = await rows.get_run(session, thread_id, run_id)
        if run is None:
            raise not_found(f"No run found with id '{run_id}'.", param="run_id")
        return run

    async def close(self) -> None:
        for task in list(self._streams):
            task.cancel()
        await asyncio.gather(*self._streams, return_exceptions=True)
