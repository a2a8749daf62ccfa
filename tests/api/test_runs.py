"""Runs on the real SmolLM2 engine through the official SDK: polled and streamed, function tools through
requires_action and submit_tool_outputs, cancel, the one-live-run rule, truncation and token budgets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from openai import AsyncAssistantEventHandler

from oasis.services.assistants import threads as threads_service
from tests.conftest import Harness, smollm
from tests.scripted_upstream import ScriptedChat, upstream_oasis
from tests.server_process import oasis_env, oasis_server

MODEL = "gpt-4o-mini"
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
FORCED = {"type": "function", "function": {"name": "get_weather"}}


async def _assistant(client: openai.AsyncOpenAI, **fields: Any) -> Any:
    fields.setdefault("instructions", "You are a helpful assistant. Answer briefly.")
    return await client.beta.assistants.create(model=MODEL, temperature=0, **fields)


async def _thread(client: openai.AsyncOpenAI, text: str = "Say hello.") -> Any:
    return await client.beta.threads.create(messages=[{"role": "user", "content": text}])


async def test_polled_run_completes_with_a_message_steps_and_usage(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client)
    thread = await _thread(client)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256
    )
    assert run.status == "completed", run.last_error
    assert run.started_at is not None and run.completed_at is not None and run.expires_at is None
    assert run.model == MODEL and run.instructions == assistant.instructions
    assert run.usage is not None and run.usage.prompt_tokens > 0 and run.usage.completion_tokens > 0

    messages = await client.beta.threads.messages.list(thread.id, order="asc")
    assert [message.role for message in messages.data] == ["user", "assistant"]
    reply = messages.data[1]
    assert reply.assistant_id == assistant.id and reply.run_id == run.id and reply.status == "completed"
    assert reply.content[0].text.value.strip()  # type: ignore[union-attr]
    by_run = await client.beta.threads.messages.list(thread.id, run_id=run.id)
    assert [message.id for message in by_run.data] == [reply.id]

    steps = await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    (step,) = steps.data
    assert step.type == "message_creation" and step.status == "completed"
    assert step.step_details.message_creation.message_id == reply.id  # type: ignore[union-attr]
    assert step.usage is not None and step.usage.total_tokens == run.usage.total_tokens
    fetched = await client.beta.threads.runs.steps.retrieve(step.id, thread_id=thread.id, run_id=run.id)
    assert fetched.id == step.id
    assert [item.id for item in (await client.beta.threads.runs.list(thread.id)).data] == [run.id]


async def test_function_tool_round_trip(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client, tools=[WEATHER_TOOL])
    thread = await _thread(client, "What is the weather in Paris?")
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tool_choice=FORCED
    )
    assert run.status == "requires_action"
    assert run.required_action is not None and run.required_action.type == "submit_tool_outputs"
    (waiting,) = (await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)).data
    assert waiting.status == "in_progress" and waiting.usage is None  # null until the step ends (the spec)
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)

    # While it waits, the thread is busy: no new message, no second run.
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.messages.create(thread.id, role="user", content="hurry")
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    # Every pending call must be answered, and only those.
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id, tool_outputs=[])
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "call_wrong", "output": "x"}]
        )

    run = await client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "Sunny, 24 C"}]
    )
    assert run.status == "completed", run.last_error
    steps = (await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc")).data
    assert [step.type for step in steps] == ["tool_calls", "message_creation"]
    tool_step = steps[0]
    assert tool_step.status == "completed"
    (done_call,) = tool_step.step_details.tool_calls  # type: ignore[union-attr]
    assert done_call.id == call.id and done_call.function.output == "Sunny, 24 C"  # type: ignore[union-attr]
    assert run.usage is not None
    assert run.usage.total_tokens == sum(step.usage.total_tokens for step in steps if step.usage)


async def test_tool_choice_none_answers_without_calling(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client, tools=[WEATHER_TOOL])
    thread = await _thread(client, "What is the weather in Paris?")
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tool_choice="none", max_completion_tokens=256
    )
    assert run.status in ("completed", "incomplete") and run.required_action is None


class _Recorder(AsyncAssistantEventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.text = ""
        self.arguments = ""  # a function call's, as on_tool_call_delta hears them

    async def on_event(self, event: Any) -> None:
        self.names.append(event.event)

    async def on_text_delta(self, delta: Any, snapshot: Any) -> None:
        self.text += delta.value or ""

    async def on_tool_call_delta(self, delta: Any, snapshot: Any) -> None:
        if delta.type == "function" and delta.function is not None:
            self.arguments += delta.function.arguments or ""


async def test_streamed_run_events_in_openai_order(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client)
    thread = await _thread(client)
    recorder = _Recorder()
    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=recorder, max_completion_tokens=256
    ) as stream:
        await stream.until_done()
        final_run = await stream.get_final_run()
        final_messages = await stream.get_final_messages()
    names = recorder.names
    assert names[:5] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
    ]
    assert names[5:7] == ["thread.message.created", "thread.message.in_progress"]
    deltas = [name for name in names if name == "thread.message.delta"]
    assert deltas and names[7 : 7 + len(deltas)] == deltas
    assert names[7 + len(deltas) :] in (
        ["thread.message.completed", "thread.run.step.completed", "thread.run.completed"],
        ["thread.message.incomplete", "thread.run.step.completed", "thread.run.incomplete"],
    )
    assert final_run.status in ("completed", "incomplete")
    (message,) = final_messages
    stored = await client.beta.threads.messages.retrieve(message.id, thread_id=thread.id)
    assert recorder.text == stored.content[0].text.value  # type: ignore[union-attr]
    assert message.content[0].text.value == stored.content[0].text.value  # type: ignore[union-attr]


async def test_streamed_tool_call_and_submit_stream(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client, tools=[WEATHER_TOOL])
    recorder = _Recorder()
    async with client.beta.threads.create_and_run_stream(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "Weather in Oslo?"}]},
        tool_choice=FORCED,
        event_handler=recorder,
    ) as stream:
        await stream.until_done()
        run = stream.current_run
    assert recorder.names[0] == "thread.created"
    assert recorder.names[-1] == "thread.run.requires_action"
    assert "thread.run.step.delta" in recorder.names
    assert run is not None and run.status == "requires_action" and run.required_action is not None
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    # the arguments come as deltas after the call's opening one, as OpenAI streams them
    assert recorder.arguments == call.function.arguments and json.loads(call.function.arguments)
    # The SDK's snapshot of the step, built from the deltas, holds the call once: ids are not doubled.
    async with client.beta.threads.runs.submit_tool_outputs_stream(
        run_id=run.id,
        thread_id=run.thread_id,
        tool_outputs=[{"tool_call_id": call.id, "output": "Snow, -3 C"}],
        event_handler=_Recorder(),
    ) as stream:
        await stream.until_done()
        after = await stream.get_final_run()
    assert after.status in ("completed", "incomplete")
    steps = (await client.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id, order="asc")).data
    assert steps[0].step_details.tool_calls[0].id == call.id  # type: ignore[union-attr]
    assert steps[0].step_details.tool_calls[0].function.output == "Snow, -3 C"  # type: ignore[union-attr]


class _Story(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.created: list[str] = []
        self.pieces = 0

    async def on_tool_call_created(self, tool_call: Any) -> None:
        self.created.append(tool_call.id)

    async def on_tool_call_delta(self, delta: Any, snapshot: Any) -> None:
        await super().on_tool_call_delta(delta, snapshot)
        self.pieces += bool(delta.function and delta.function.arguments)


STORY_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "save_story",
        "description": "Save a story",
        "parameters": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "maxLength": 40},
                "story": {"type": "string", "minLength": 100, "maxLength": 200},
            },
            "required": ["title", "story"],
        },
    },
}


@pytest.mark.parametrize("beside", [[], [{"type": "file_search"}]], ids=["functions", "and-file-search"])
async def test_a_forced_calls_arguments_stream_as_the_model_writes_them(
    chat_oasis: Harness, beside: list[dict[str, Any]]
) -> None:
    """A call the run forces is shown as OpenAI streams one: its step opens, the call opens (once), then its
    arguments come in pieces, and the pieces joined are the arguments the run asks outputs for (a named function
    is forced: no built-in call can share its step's time, though the assistant has one)."""
    client = chat_oasis.sdk()
    assistant = await _assistant(client, tools=[STORY_TOOL, *beside])
    thread = await _thread(client, "Write a story about a dragon and save it.")
    recorder = _Story()
    async with client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        tool_choice={"type": "function", "function": {"name": "save_story"}},
        event_handler=recorder,
    ) as stream:
        await stream.until_done()
        run = stream.current_run
    assert run is not None and run.status == "requires_action" and run.required_action is not None
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert len(json.loads(call.function.arguments)["story"]) >= 100
    assert recorder.created == [call.id]
    assert recorder.arguments == call.function.arguments and recorder.pieces > 3
    names = recorder.names
    first_piece = names.index("thread.run.step.delta") + 1  # after the call's opening delta
    assert names[first_piece] == "thread.run.step.delta"
    assert names.index("thread.run.step.created") < first_piece < names.index("thread.run.requires_action")
    (step,) = (await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)).data
    assert step.status == "in_progress" and step.step_details.tool_calls[0].id == call.id  # type: ignore[union-attr]
    assert names.count("thread.run.step.created") == 1  # the step the stream opened is the one stored


class _CallCutShort(ScriptedChat):
    """An OpenAI-compatible model upstream whose call is cut by the token budget as it writes the arguments
    (after a sentence, when `says` is set)."""

    usage = {"prompt_tokens": 30, "completion_tokens": 256, "total_tokens": 286}
    says = ""

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        opening = {"index": 0, "id": "call_cut", "type": "function"}
        return [
            *([{"content": self.says}] if self.says else []),
            {"tool_calls": [{**opening, "function": {"name": "get_weather", "arguments": ""}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Os'}}]},
        ], "length"


class _SaysThenCallCutShort(_CallCutShort):
    says = "Let me look. "


@pytest.mark.parametrize("upstream", [_CallCutShort, _SaysThenCallCutShort])
async def test_a_streamed_call_cut_by_the_budget_ends_its_step_cancelled(
    start_oasis: Callable[..., Any], upstream: type[_CallCutShort]
) -> None:
    """The call's step ends cancelled with the call as far as it was written, and steps come one after another:
    a sentence before the call ends with its message before the call's step opens; without one, the run's (empty)
    message comes after the call's step ended."""
    async with upstream_oasis(start_oasis, upstream) as harness:
        client = harness.sdk()
        assistant = await client.beta.assistants.create(model="remote", tools=[WEATHER_TOOL])
        thread = await _thread(client, "Weather in Oslo?")
        recorder = _Story()
        async with client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256, event_handler=recorder
        ) as stream:
            await stream.until_done()
            streamed = stream.current_run
        assert streamed is not None and recorder.names[-1] == "thread.run.incomplete"
        run = await client.beta.threads.runs.retrieve(streamed.id, thread_id=thread.id)
        assert run.status == "incomplete" and run.required_action is None
        assert run.incomplete_details is not None and run.incomplete_details.reason == "max_completion_tokens"
        assert recorder.created == ["call_cut"] and recorder.arguments == '{"city": "Os'
        assert "thread.run.requires_action" not in recorder.names
        steps = (await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc")).data
        kinds = ["message_creation", "tool_calls"] if upstream.says else ["tool_calls", "message_creation"]
        assert [step.type for step in steps] == kinds
        cut = next(step for step in steps if step.type == "tool_calls")
        assert cut.status == "cancelled"
        (call,) = cut.step_details.tool_calls  # type: ignore[union-attr]
        assert call.id == "call_cut" and call.function.arguments == '{"city": "Os'  # type: ignore[union-attr]
        # one step at a time: each step ends before the next opens
        ends = ("thread.run.step.completed", "thread.run.step.cancelled")
        marks = [name for name in recorder.names if name == "thread.run.step.created" or name in ends]
        assert [name == "thread.run.step.created" for name in marks] == [True, False, True, False]
        (message,) = (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data
        # a sentence ended where the call began; an empty reply was cut with the call
        assert message.status == ("completed" if upstream.says else "incomplete")
        assert message.content[0].text.value == upstream.says  # type: ignore[union-attr]
        await client.beta.threads.messages.create(thread.id, role="user", content="Never mind.")  # the thread is free


class _CallsTwice(ScriptedChat):
    """An OpenAI-compatible model upstream that calls a function twice in one answer, its arguments in pieces."""

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        deltas: list[dict[str, Any]] = []
        for index, city in enumerate(("Oslo", "Lima")):
            arguments = json.dumps({"city": city})
            opening = {"index": index, "id": f"call_{city}", "type": "function"}
            deltas.append({"tool_calls": [{**opening, "function": {"name": "get_weather", "arguments": ""}}]})
            for piece in (arguments[:5], arguments[5:]):
                deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        return deltas, "tool_calls"


class _Calls(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.created: list[str] = []
        self.heard: dict[str, str] = {}

    async def on_tool_call_created(self, tool_call: Any) -> None:
        self.created.append(tool_call.id)

    async def on_tool_call_delta(self, delta: Any, snapshot: Any) -> None:
        self.heard[snapshot.id] = self.heard.get(snapshot.id, "") + (delta.function.arguments or "")


async def test_two_function_calls_in_one_answer_are_heard_call_by_call(start_oasis: Callable[..., Any]) -> None:
    """Each call opens, then its arguments come: the SDK's handler hears each call created once and its arguments
    as deltas (all openings in one delta, then all arguments, ran the handler's calls out of step)."""
    async with upstream_oasis(start_oasis, _CallsTwice) as harness:
        client = harness.sdk()
        assistant = await client.beta.assistants.create(model="remote", tools=[WEATHER_TOOL])
        thread = await _thread(client)
        recorder = _Calls()
        async with client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=assistant.id, event_handler=recorder
        ) as stream:
            await stream.until_done()
            run = stream.current_run
    assert run is not None and run.status == "requires_action" and run.required_action is not None
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert recorder.created == [call.id for call in calls] == ["call_Oslo", "call_Lima"]
    assert recorder.heard == {call.id: call.function.arguments for call in calls}


async def test_stream_frames_are_plain_and_named(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client)
    thread = await _thread(client)
    async with (
        chat_oasis.http() as http,
        http.stream(
            "POST",
            f"/v1/threads/{thread.id}/runs",
            json={"assistant_id": assistant.id, "stream": True, "max_completion_tokens": 256},
            headers={"OpenAI-Beta": "assistants=v2", "Accept": "application/json"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache" and response.headers["x-accel-buffering"] == "no"
        body = (await response.aread()).decode()
    frames = [frame for frame in body.split("\n\n") if frame]
    assert all(frame.startswith("event: ") for frame in frames) and "\nid:" not in body
    assert frames[-1] == "event: done\ndata: [DONE]"


async def test_cancel_while_waiting_for_tool_outputs(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client, tools=[WEATHER_TOOL])
    thread = await _thread(client, "Weather in Rome?")
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tool_choice=FORCED
    )
    assert run.status == "requires_action"
    cancelling = await client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status in ("cancelling", "cancelled")
    run = await client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert run.status == "cancelled" and run.cancelled_at is not None
    (step,) = (await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)).data
    assert step.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    # The thread is free again.
    await client.beta.threads.messages.create(thread.id, role="user", content="Never mind.")


async def test_cancel_mid_generation_keeps_the_partial_message_incomplete(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client)
    thread = await _thread(client, "Write a very long story about a dragon, at least a thousand words.")
    run = await client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    for _ in range(200):  # until its message has begun
        if (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data:
            break
        await asyncio.sleep(0.05)
    await client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    run = await client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert run.status == "cancelled"
    (message,) = (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data
    assert message.status == "incomplete" and message.incomplete_details is not None
    # The tokens generated before the cancel count, on the run and on its step, though no usage chunk came.
    assert message.content[0].text.value  # type: ignore[union-attr]
    assert run.usage is not None and run.usage.prompt_tokens > 0 and run.usage.completion_tokens > 0
    assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens
    (step,) = (await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)).data
    assert step.status == "cancelled" and step.usage is not None
    assert step.usage.completion_tokens == run.usage.completion_tokens


async def test_a_streamed_run_cancelled_mid_reply_says_cancelling_then_cancelled(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client)
    thread = await _thread(client, "Write a very long story about a dragon, at least a thousand words.")

    async def streamed() -> tuple[list[str], Any]:
        async with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
            names = [event.event async for event in stream]
            return names, await stream.get_final_run()

    reading = asyncio.create_task(streamed())
    for _ in range(200):  # until its message has begun (the test's transport hands the stream over at its end)
        if (begun := (await client.beta.threads.messages.list(thread.id)).data) and begun[0].role == "assistant":
            break
        await asyncio.sleep(0.05)
    await client.beta.threads.runs.cancel(begun[0].run_id or "", thread_id=thread.id)
    names, final = await reading
    assert final.status == "cancelled" and names[-1] == "thread.run.cancelled"
    # as OpenAI's: the run says it is cancelling before its message and step end
    assert names.index("thread.run.cancelling") < names.index("thread.message.incomplete") < len(names) - 1


async def _first_tokens(http: Any) -> float:
    """How many generations have produced their first token, from the Prometheus metrics."""
    text = (await http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("oasis_time_to_first_token_seconds_count")
    )


async def test_cancel_while_the_model_writes_a_calls_arguments_counts_its_tokens(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    # a story with no end in sight: the cancel comes while it is written
    long_story = {
        "type": "object",
        "properties": {"story": {"type": "string", "minLength": 250}},
        "required": ["story"],
    }
    story_tool: Any = {"type": "function", "function": {**STORY_TOOL["function"], "parameters": long_story}}
    assistant = await _assistant(client, tools=[story_tool])
    thread = await _thread(client, "Write a story about a dragon and save it.")
    async with chat_oasis.http() as http:
        before = await _first_tokens(http)
        run = await client.beta.threads.runs.create(
            thread.id, assistant_id=assistant.id, tool_choice={"type": "function", "function": {"name": "save_story"}}
        )
        for _ in range(1500):  # until the model has begun the call (its first token), which is 250+ characters long
            if await _first_tokens(http) > before:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the run's generation never began")
    await client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    run = await client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert run.status == "cancelled" and run.required_action is None
    # Cut off while writing the call: it never asked for outputs. The step the call opened (if the cancel came
    # after its name) ends cancelled, with the call as far as it was written: its arguments unfinished.
    for step in (await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)).data:
        assert step.type == "tool_calls" and step.status == "cancelled"
        (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
        assert call.function.name == "save_story" and call.function.output is None  # type: ignore[union-attr]
        with pytest.raises(json.JSONDecodeError):
            json.loads(call.function.arguments)  # type: ignore[union-attr]
    # The call's tokens were generated before the cancel: they count, though no usage chunk came and no call was made.
    assert run.usage is not None and run.usage.prompt_tokens > 0 and run.usage.completion_tokens > 0
    assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens
    assert not (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data
    await client.beta.threads.messages.create(thread.id, role="user", content="Never mind.")  # the thread is free


async def test_token_budgets_end_the_run_incomplete(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client)
    thread = await _thread(client, "Write a very long story about a dragon, at least a thousand words.")
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256
    )
    if run.status == "incomplete":
        assert run.incomplete_details is not None and run.incomplete_details.reason == "max_completion_tokens"
        assert run.usage is not None and run.usage.completion_tokens == 256
        (message,) = (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data
        assert message.status == "incomplete"
    else:
        assert run.status == "completed" and run.usage is not None and run.usage.completion_tokens < 256

    long_text = "Tell me about this. " + "The quick brown fox jumps over the lazy dog. " * 60
    thread = await _thread(client, long_text)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_prompt_tokens=256
    )
    assert run.status == "incomplete"
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_prompt_tokens"


async def test_truncation_keeps_the_last_messages(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client)
    history = [{"role": "user", "content": f"Note {i}: " + "filler words " * 40} for i in range(6)]
    thread = await client.beta.threads.create(messages=[*history, {"role": "user", "content": "Say hi."}])  # type: ignore[arg-type]
    whole = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256
    )
    await client.beta.threads.messages.create(thread.id, role="user", content="Say hi again.")
    cut = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        max_completion_tokens=256,
        truncation_strategy={"type": "last_messages", "last_messages": 1},
    )
    assert whole.usage is not None and cut.usage is not None
    assert cut.truncation_strategy is not None and cut.truncation_strategy.last_messages == 1
    assert cut.usage.prompt_tokens < whole.usage.prompt_tokens / 4


async def test_run_overrides_and_checks(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client, tools=[WEATHER_TOOL])
    thread = await _thread(client)
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.runs.create(thread.id, assistant_id="asst_missing")
    with pytest.raises(openai.BadRequestError):  # OpenAI's Assistants answer a bad model with a 400
        await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, model="no-such-model")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.runs.create(
            thread.id, assistant_id=assistant.id, tool_choice={"type": "function", "function": {"name": "nope"}}
        )
    assert caught.value.param == "tool_choice.function.name"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, max_completion_tokens=5)
    assert caught.value.param == "max_completion_tokens"
    for field in ("max_prompt_tokens", "max_completion_tokens"):  # past what the database's integer holds
        with pytest.raises(openai.BadRequestError) as caught:
            await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, **{field: 2**63})  # type: ignore[arg-type]
        assert caught.value.param == field
    # Asked for, but with nothing to call, or a count left out: a 400, not a run doing something else.
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, tools=[], tool_choice="required")
    assert caught.value.param == "tool_choice"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.runs.create(
            thread.id, assistant_id=assistant.id, truncation_strategy={"type": "last_messages"}
        )
    assert caught.value.param is not None and caught.value.param.startswith("truncation_strategy")

    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        instructions="Only ever reply with the word OK.",
        additional_instructions="Be brief.",
        additional_messages=[{"role": "user", "content": "Reply now."}],
        tools=[],
        metadata={"source": "test"},
        temperature=0.5,
        top_p=0.8,
        max_completion_tokens=256,
        extra_body={"parallel_tool_calls": False},  # the May-2024 SDK predates the field
    )
    assert run.instructions == "Only ever reply with the word OK." and run.tools == []
    assert run.metadata == {"source": "test"} and run.temperature == 0.5 and run.top_p == 0.8
    assert run.parallel_tool_calls is False
    texts = [m.content[0].text.value for m in (await client.beta.threads.messages.list(thread.id, order="asc")).data]  # type: ignore[union-attr]
    assert texts[:2] == ["Say hello.", "Reply now."]
    updated = await client.beta.threads.runs.update(run.id, thread_id=thread.id, metadata={"source": "changed"})
    assert updated.metadata == {"source": "changed"} and updated.status == run.status


async def test_deleting_the_assistant_leaves_the_thread_usable(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client)
    thread = await _thread(client)
    first = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256
    )
    await client.beta.assistants.delete(assistant.id)
    assert (await client.beta.threads.runs.retrieve(first.id, thread_id=thread.id)).assistant_id == assistant.id
    other = await _assistant(client)
    second = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=other.id, max_completion_tokens=256
    )
    assert second.status in ("completed", "incomplete")
    await client.beta.threads.delete(thread.id)
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.runs.retrieve(first.id, thread_id=thread.id)


async def test_a_run_left_waiting_for_outputs_expires(chat_oasis: Harness) -> None:
    from sqlalchemy import update

    from oasis.storage.tables import Run

    client = chat_oasis.sdk()
    assistant = await _assistant(client, tools=[WEATHER_TOOL])
    thread = await _thread(client, "Weather in Lima?")
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tool_choice=FORCED
    )
    assert run.status == "requires_action" and run.expires_at is not None
    assert run.expires_at - run.created_at == 600  # OpenAI's ten minutes
    async with chat_oasis.container.db.session() as session:  # ten minutes pass
        await session.execute(update(Run).where(Run.id == run.id).values(expires_at=run.created_at - 1))
        await session.commit()
    with pytest.raises(openai.BadRequestError):
        await client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "x", "output": "late"}]
        )
    chat_oasis.container.run_worker_loop.wake()
    for _ in range(100):  # poll() stops at requires_action: read until the worker has expired it
        run = await client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
        if run.status != "requires_action":
            break
        await asyncio.sleep(0.05)
    assert run.status == "expired" and run.required_action is None
    (step,) = (await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)).data
    assert step.status == "expired" and step.expired_at is not None
    await client.beta.threads.messages.create(thread.id, role="user", content="The thread is free again.")


async def test_a_run_still_queued_past_its_lifetime_expires_and_the_next_one_runs(
    start_oasis: Callable[..., Any],
) -> None:
    from sqlalchemy import update

    from oasis.storage.tables import Run

    # No worker until the test says: the runs wait in the queue.
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm()], workers={"in_process": False})
    client = harness.sdk()
    assistant = await _assistant(client)
    stale_thread, fresh_thread = await _thread(client), await _thread(client)
    stale = await client.beta.threads.runs.create(stale_thread.id, assistant_id=assistant.id, max_completion_tokens=256)
    fresh = await client.beta.threads.runs.create(fresh_thread.id, assistant_id=assistant.id, max_completion_tokens=256)
    assert stale.status == fresh.status == "queued"
    async with harness.container.db.session() as session:  # ten minutes pass for the first
        await session.execute(update(Run).where(Run.id == stale.id).values(expires_at=stale.created_at - 1))
        await session.commit()
    runner = harness.container.run_runner
    while await runner.run_next("worker-1"):
        pass
    for thread_id, run_id, status in ((stale_thread.id, stale.id, "expired"), (fresh_thread.id, fresh.id, "completed")):
        for _ in range(600):
            run = await client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
            if run.status not in ("queued", "in_progress"):
                break
            await asyncio.sleep(0.05)
        assert run.status == status, (run_id, run.status, run.last_error)
    assert run.status == "completed" and run.started_at is not None
    expired = await client.beta.threads.runs.retrieve(stale.id, thread_id=stale_thread.id)
    assert expired.started_at is None and expired.expires_at is None  # never began; no time left on it
    messages = await client.beta.threads.messages.list(stale_thread.id)
    assert [message.role for message in messages.data] == ["user"]  # no reply was written
    await client.beta.threads.messages.create(stale_thread.id, role="user", content="The thread is free again.")


async def test_two_runs_started_at_once_on_a_thread_one_wins(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client, tools=[WEATHER_TOOL])
    thread = await _thread(client, "Weather in Cairo?")
    results = await asyncio.gather(
        *(client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, tool_choice=FORCED) for _ in range(4)),
        return_exceptions=True,
    )
    started = [result for result in results if not isinstance(result, BaseException)]
    refused = [result for result in results if isinstance(result, openai.BadRequestError)]
    assert len(started) == 1 and len(refused) == 3
    assert all("already has an active run" in error.message for error in refused)
    assert len((await client.beta.threads.runs.list(thread.id)).data) == 1


async def test_a_message_and_a_run_asked_for_at_once_take_turns(
    chat_oasis: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message that passed the no-live-run check is on the thread before a run can start: the run asked for
    meanwhile waits for it (it would otherwise begin on a thread that the message joins after it started)."""
    client = chat_oasis.sdk()
    assistant = await _assistant(client, tools=[WEATHER_TOOL])
    thread = await _thread(client, "Weather in Cairo?")
    checked = threads_service.refuse_while_running
    run_asked: asyncio.Task[Any] | None = None
    run_began_meanwhile = False

    async def check_then_ask_for_a_run(*args: Any) -> None:
        nonlocal run_asked, run_began_meanwhile
        await checked(*args)
        run_asked = asyncio.create_task(
            client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, tool_choice=FORCED)
        )
        done, _ = await asyncio.wait({run_asked}, timeout=1.0)
        run_began_meanwhile = bool(done)

    monkeypatch.setattr(threads_service, "refuse_while_running", check_then_ask_for_a_run)
    message = await client.beta.threads.messages.create(thread.id, role="user", content="And in Oslo?")
    assert not run_began_meanwhile
    assert run_asked is not None
    run = await run_asked
    assert run.status in {"queued", "in_progress"}
    listed = await client.beta.threads.messages.list(thread.id, order="asc")
    assert [item.id for item in listed.data][-1] == message.id
    # Once the run is live, a message is refused, and nothing is stored.
    monkeypatch.setattr(threads_service, "refuse_while_running", checked)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.beta.threads.messages.create(thread.id, role="user", content="And in Lima?")
    assert "while a run" in refused.value.message and refused.value.code == "run_active"
    listed = await client.beta.threads.messages.list(thread.id, order="asc")
    assert [item.id for item in listed.data][-1] == message.id
    await client.beta.threads.runs.cancel(run.id, thread_id=thread.id)


async def test_auto_truncation_fits_a_thread_longer_than_the_context(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client)
    # About 3,000 tokens of history, in a model whose context holds 2,048.
    history: Any = [
        {"role": "user", "content": f"Note {i}: " + "the river runs past the old mill " * 12} for i in range(30)
    ]
    thread = await client.beta.threads.create(messages=[*history, {"role": "user", "content": "Say hi."}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256
    )
    assert run.status in ("completed", "incomplete"), run.last_error
    assert run.usage is not None and 1000 < run.usage.prompt_tokens <= 2048 - 256


async def test_a_run_refuses_images_its_text_model_cannot_see(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client)
    picture = await client.files.create(file=("cat.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 64), purpose="vision")
    look = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_file", "image_file": {"file_id": picture.id}},
    ]

    # Made with the thread: refused.
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.create_and_run(
            assistant_id=assistant.id,
            thread={"messages": [{"role": "user", "content": look}]},  # type: ignore[list-item]
        )
    assert caught.value.code == "image_parts_unsupported" and caught.value.param == "thread.messages[0].content[1]"

    # Added with the run: refused, and the message is not kept.
    thread = await _thread(client)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.runs.create(
            thread.id,
            assistant_id=assistant.id,
            additional_messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}
            ],  # type: ignore[list-item]
        )
    assert caught.value.code == "image_parts_unsupported" and caught.value.param == "additional_messages[0].content[0]"
    assert [m.role for m in (await client.beta.threads.messages.list(thread.id)).data] == ["user"]
    assert (await client.beta.threads.runs.list(thread.id)).data == []

    # Already in the thread: refused naming the thread, until the run keeps the image out of what it shows.
    await client.beta.threads.messages.create(thread.id, role="user", content=look)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    assert caught.value.code == "image_parts_unsupported" and caught.value.param == "thread_id"
    assert "text only" in caught.value.message
    await client.beta.threads.messages.create(thread.id, role="user", content="Say hello.")
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        max_completion_tokens=256,
        truncation_strategy={"type": "last_messages", "last_messages": 1},
    )
    assert run.status in ("completed", "incomplete"), run.last_error


async def _reply_begun(client: openai.AsyncOpenAI, thread_id: str, run_id: str) -> Any:
    for _ in range(400):
        found = (await client.beta.threads.messages.list(thread_id, run_id=run_id)).data
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError("the run's reply never began")


async def test_a_reply_changed_or_deleted_while_it_is_written(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    assistant = await _assistant(client)
    thread = await _thread(client, "Write a very long story about a dragon, at least a thousand words.")
    run = await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, max_completion_tokens=256)
    reply = await _reply_begun(client, thread.id, run.id)
    assert reply.status == "in_progress"
    await client.beta.threads.messages.update(reply.id, thread_id=thread.id, metadata={"pinned": "yes"})
    run = await client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert run.status in ("completed", "incomplete"), run.last_error
    # The run's last write keeps the user's metadata, and the user's write kept the run's text.
    written = await client.beta.threads.messages.retrieve(reply.id, thread_id=thread.id)
    assert written.metadata == {"pinned": "yes"} and written.status in ("completed", "incomplete")
    assert len(written.content[0].text.value) > 100  # type: ignore[union-attr]

    await client.beta.threads.messages.create(thread.id, role="user", content="Now a long one about a whale.")
    second = await client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, max_completion_tokens=256)
    doomed = await _reply_begun(client, thread.id, second.id)
    assert doomed.status == "in_progress"
    deleted = await client.beta.threads.messages.delete(doomed.id, thread_id=thread.id)
    assert deleted.deleted
    second = await client.beta.threads.runs.poll(second.id, thread_id=thread.id)
    # The run ends as it would have; what it wrote after the delete does not bring the message back.
    assert second.status in ("completed", "incomplete"), second.last_error
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.messages.retrieve(doomed.id, thread_id=thread.id)
    assert doomed.id not in [m.id for m in (await client.beta.threads.messages.list(thread.id, limit=100)).data]
    (step,) = (await client.beta.threads.runs.steps.list(second.id, thread_id=thread.id)).data
    assert step.status == "completed" and step.step_details.message_creation.message_id == doomed.id  # type: ignore[union-attr]
    # The thread goes on without the deleted reply.
    third = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_completion_tokens=256
    )
    assert third.status in ("completed", "incomplete"), third.last_error


async def test_a_run_that_fails_mid_reply_keeps_what_it_wrote(start_oasis: Callable[..., Any], tmp_path: Path) -> None:
    """The model's server dies while the reply streams: the run fails, and the message keeps the text it had
    (incomplete, run_failed), as a cancelled run's does; its step is failed with the error."""
    config = tmp_path / "oasis.yaml"
    config.write_text(yaml.safe_dump({"defaults": False, "models": [smollm()]}))
    with oasis_server(tmp_path / "upstream", oasis_env(None), "--config", str(config)) as upstream:
        remote = {"base_url": f"{upstream.base_url}/v1", "model": "smollm2-135m-instruct"}
        harness: Harness = await start_oasis(
            engine_factories=None, models=[{"id": "remote", "engine": "upstream", "options": remote}]
        )
        client = harness.sdk()
        assistant = await client.beta.assistants.create(model="remote", instructions="You write long stories.")
        thread = await _thread(client, "Write a long story about a dragon and a baker, in at least 600 words.")
        run = await client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        for _ in range(600):  # the reply's step exists once its first words came
            steps = (await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)).data
            if steps:
                break
            await asyncio.sleep(0.02)
        # its first words came: the model is killed at once (a story sampled short could end within half a second)
        upstream.process.kill()
        upstream.process.wait()
        run = await client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=50)
    assert run.status == "failed" and run.last_error is not None and run.failed_at is not None
    (reply,) = (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data
    assert reply.status == "incomplete" and reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "run_failed"
    assert reply.content[0].text.value.strip()  # type: ignore[union-attr]
    (step,) = (await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)).data
    assert step.status == "failed" and step.failed_at is not None and step.last_error is not None


async def test_a_reply_cut_by_the_context_window_is_an_incomplete_message(start_oasis: Callable[..., Any]) -> None:
    """No token budget, but the model's context ends the reply: the run completes, its message is incomplete
    (max_tokens) rather than shown as a whole answer."""
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(context_length=256, parallel=1)])
    client = harness.sdk()
    assistant = await client.beta.assistants.create(model="smollm2-135m-instruct", temperature=0)
    thread = await _thread(client, "Write a very long story about a dragon and a baker, in at least 800 words.")
    run = await client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    (reply,) = (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data
    assert reply.status == "incomplete" and reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_tokens"
    assert run.usage is not None and run.usage.total_tokens >= 200  # the context was filled


async def test_a_run_waits_out_an_upstream_whose_queue_is_full(start_oasis: Callable[..., Any], tmp_path: Path) -> None:
    """The model's upstream answers 429 (one slot, one waiting, both taken): the run waits, as for a local engine's
    full queue, and answers once there is room; an upstream's error comes with its stream's first chunk."""
    config = tmp_path / "oasis.yaml"
    config.write_text(yaml.safe_dump({"defaults": False, "models": [smollm(parallel=1, max_queue=1)]}))
    with oasis_server(tmp_path / "upstream", oasis_env(None), "--config", str(config)) as upstream:
        remote = {"base_url": f"{upstream.base_url}/v1", "model": "smollm2-135m-instruct"}
        harness: Harness = await start_oasis(
            engine_factories=None, models=[{"id": "remote", "engine": "upstream", "options": remote}]
        )
        direct = openai.AsyncOpenAI(base_url=f"{upstream.base_url}/v1", api_key="unused", max_retries=0)
        long = {"model": "smollm2-135m-instruct", "prompt": "Once upon a time", "max_tokens": 120}
        holders = [asyncio.create_task(direct.completions.create(**long, extra_body={"ignore_eos": True}))]
        await asyncio.sleep(0.3)
        holders.append(asyncio.create_task(direct.completions.create(**long, extra_body={"ignore_eos": True})))
        await asyncio.sleep(0.3)
        with pytest.raises(openai.RateLimitError):  # the upstream is full now
            await direct.completions.create(**long)
        client = harness.sdk()
        assistant = await client.beta.assistants.create(model="remote", temperature=0)
        thread = await _thread(client)
        run = await client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100
        )
        await asyncio.gather(*holders)
    assert run.status == "completed", run.last_error
    (reply,) = (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data
    assert reply.content[0].text.value  # type: ignore[union-attr]


async def test_reasoning_effort_of_the_assistant_or_the_run_reaches_the_chat_template(
    start_oasis: Callable[..., Any],
) -> None:
    from tests.api.test_chat_formats import SWITCH_TEMPLATE

    # the template writes "Reasoning: <effort>" into the prompt when it is given one
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(chat_template=SWITCH_TEMPLATE)])
    client = harness.sdk()
    plain = await _assistant(client)
    effortful = await _assistant(client, extra_body={"reasoning_effort": "high"})

    async def prompt_tokens(assistant_id: str, **fields: Any) -> int:
        thread = await _thread(client, "What is 2 + 2?")
        run = await client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant_id, max_completion_tokens=256, **fields
        )
        assert run.status in ("completed", "incomplete") and run.usage is not None, run.last_error
        return run.usage.prompt_tokens

    without = await prompt_tokens(plain.id)
    assert await prompt_tokens(effortful.id) > without  # the assistant's effort was written
    assert await prompt_tokens(plain.id, extra_body={"reasoning_effort": "xhigh"}) > without  # the run's own
    with pytest.raises(openai.BadRequestError) as refused:
        await _assistant(client, extra_body={"reasoning_effort": "extreme"})
    assert refused.value.param == "reasoning_effort"
