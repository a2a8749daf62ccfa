"""The code_interpreter tool in runs, on the real SmolLM2 engine and the real sandbox through the official SDK: the
model's code runs in the thread's session, the step carries its input and outputs, streams show the code as it is
written; figures and written files become `assistants_output` files; a machine without a sandbox says so."""

from __future__ import annotations

import asyncio
import http.server
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from openai import AsyncAssistantEventHandler
from sqlalchemy import select

from oasis.sandbox.bubblewrap import Limits
from oasis.sandbox.sessions import SandboxPool
from oasis.storage.tables import Run
from oasis.workers.runs import _file_paths
from tests.conftest import Harness, smollm
from tests.scripted_upstream import ScriptedChat, upstream_oasis

MODEL = "gpt-4o-mini"
FORCED: Any = {"type": "code_interpreter"}
# The shipped 135M model copies code it is shown into its call more reliably than it writes its own.
ASK = "Run this code: print(17 * 23)"
SALES = b"month,amount\njan,10\nfeb,32\n"


@pytest.fixture
async def code_oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm()])
    return harness


async def _setup(client: openai.AsyncOpenAI) -> tuple[Any, Any, str]:
    sales = await client.files.create(file=("sales.csv", SALES), purpose="assistants")
    assistant = await client.beta.assistants.create(
        model=MODEL,
        temperature=0,
        instructions="Use python to answer.",
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [sales.id]}},
    )
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": ASK}])
    return assistant, thread, sales.id


async def _fresh_run(code: str) -> str:
    """What the code prints in a sandbox of its own."""
    pool = SandboxPool(Limits(call_seconds=10), max_sessions=1, idle_seconds=60)
    try:
        session = await pool.session("check")
        result = await session.run(code, {"sales.csv": SALES})
        return result.logs + (f"\n{result.error}" if result.error and result.error not in result.logs else "")
    finally:
        await pool.close()


async def test_a_run_runs_the_models_code_and_records_input_and_outputs(code_oasis: Harness) -> None:
    client = code_oasis.sdk()
    assistant, thread, _ = await _setup(client)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tool_choice=FORCED, max_completion_tokens=512
    )
    assert run.last_error is None and run.status in ("completed", "incomplete"), run.status
    steps = (await client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc")).data
    code_steps = [step for step in steps if step.type == "tool_calls"]
    assert code_steps and steps[-1].type == "message_creation"
    call = code_steps[0].step_details.tool_calls[0]  # type: ignore[union-attr]
    assert call.type == "code_interpreter" and call.id
    code = call.code_interpreter.input
    assert code.strip()
    logs = "".join(output.logs for output in call.code_interpreter.outputs if output.type == "logs")
    assert logs.strip() == (await _fresh_run(code)).strip()  # what the code gives, whatever the model wrote
    assert code_steps[0].usage is not None and code_steps[0].usage.completion_tokens > 0
    assert run.usage is not None and run.usage.total_tokens == sum(s.usage.total_tokens for s in steps)  # type: ignore[union-attr]


class _Recorder(AsyncAssistantEventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.tool_types: list[str] = []
        self.code = ""
        self.done: list[Any] = []
        self.events: list[Any] = []

    async def on_event(self, event: Any) -> None:
        self.names.append(event.event)
        self.events.append(event)

    async def on_tool_call_created(self, tool_call: Any) -> None:
        self.tool_types.append(tool_call.type)

    async def on_tool_call_done(self, tool_call: Any) -> None:
        self.done.append(tool_call)

    async def on_tool_call_delta(self, delta: Any, snapshot: Any) -> None:
        if delta.type == "code_interpreter" and delta.code_interpreter and delta.code_interpreter.input:
            self.code += delta.code_interpreter.input


async def test_a_streamed_run_shows_the_code_as_it_is_written(code_oasis: Harness) -> None:
    client = code_oasis.sdk()
    assistant, thread, _ = await _setup(client)
    recorder = _Recorder()
    async with client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        tool_choice=FORCED,
        max_completion_tokens=512,
        event_handler=recorder,
    ) as stream:
        await stream.until_done()
        final = await stream.get_final_run()
    assert final.last_error is None
    steps = (await client.beta.threads.runs.steps.list(final.id, thread_id=thread.id, order="asc")).data
    first = steps[0]
    assert first.type == "tool_calls"
    stored = first.step_details.tool_calls[0].code_interpreter.input  # type: ignore[union-attr]
    assert recorder.tool_types[0] == "code_interpreter"
    assert recorder.code.startswith(stored)  # the first call's code, piece by piece (a second may follow)
    # What the SDK put together from the deltas is the stored call: input once, and the outputs.
    assembled = recorder.done[0].code_interpreter
    stored_outputs = first.step_details.tool_calls[0].code_interpreter.outputs  # type: ignore[union-attr]
    assert assembled.input == stored and len(assembled.outputs) == len(stored_outputs)
    assert recorder.done[0].id == first.step_details.tool_calls[0].id  # type: ignore[union-attr]
    deltas = [i for i, name in enumerate(recorder.names) if name == "thread.run.step.delta"]
    assert recorder.names.index("thread.run.step.created") < deltas[0]
    assert recorder.names.index("thread.run.step.completed") > deltas[0]


class _SaysThenCodes(ScriptedChat):
    """An OpenAI-compatible model upstream that writes a sentence, then calls python (streamed in pieces, as
    OpenAI's models do), and answers in words once the code has run."""

    code_key = "code"  # where its arguments put the code
    code = "print(17 * 23)"
    answer = "It prints 391."
    usage = {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if any(message["role"] == "tool" for message in body["messages"]):
            return [{"role": "assistant", "content": self.answer}], "stop"
        call = {"index": 0, "id": "call_py", "type": "function", "function": {"name": "python", "arguments": ""}}
        arguments = json.dumps({self.code_key: self.code})
        deltas = [
            {"role": "assistant", "content": "Let me work it out. "},
            {"tool_calls": [call]},
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments[:12]}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments[12:]}}]},
        ]
        return deltas, "tool_calls"


class _SaysThenCodesAsInput(_SaysThenCodes):
    code_key = "input"  # read as the code too, though not shown as it is written


@dataclass
class _Streamed:
    client: openai.AsyncOpenAI
    thread_id: str
    final: Any  # the run, ended
    shown: list[Any]  # the messages as the SDK put them together from the stream


async def _streamed_upstream_run(
    start_oasis: Callable[..., Any], model: type[http.server.BaseHTTPRequestHandler], recorder: _Recorder, ask: str
) -> _Streamed:
    """A streamed run of an assistant with code_interpreter whose model is `model`, a scripted upstream."""
    async with upstream_oasis(start_oasis, model) as harness:
        client = harness.sdk()
        assistant = await client.beta.assistants.create(model="remote", tools=[{"type": "code_interpreter"}])
        thread = await client.beta.threads.create(messages=[{"role": "user", "content": ask}])
        async with client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=assistant.id, event_handler=recorder
        ) as stream:
            await stream.until_done()
            return _Streamed(client, thread.id, await stream.get_final_run(), await stream.get_final_messages())


@pytest.mark.parametrize("model", [_SaysThenCodes, _SaysThenCodesAsInput])
async def test_a_reply_that_says_something_then_runs_code_ends_its_message_before_the_code_step(
    start_oasis: Callable[..., Any], model: type[_SaysThenCodes]
) -> None:
    """Steps follow one another, as OpenAI's do: the message's step completes before the code's step is created
    (else the SDK's handler reads that step's end as the code call's, before its outputs). What the SDK puts
    together from the deltas is the code that ran, whether it was shown as it was written or only at its end."""
    recorder = _Recorder()
    run = await _streamed_upstream_run(start_oasis, model, recorder, "What is 17 * 23?")
    client, thread_id, final = run.client, run.thread_id, run.final
    assert final.status == "completed", final.last_error
    steps = (await client.beta.threads.runs.steps.list(final.id, thread_id=thread_id, order="asc")).data
    assert [step.type for step in steps] == ["message_creation", "tool_calls", "message_creation"]
    assert all(step.status == "completed" for step in steps)
    said = [(event.event, event.data.id) for event in recorder.events if event.event.startswith("thread.run.step.")]
    first, code = steps[0].id, steps[1].id
    assert said.index(("thread.run.step.completed", first)) < said.index(("thread.run.step.created", code))
    # the SDK's first word of the code call's end comes with what it printed (later step ends repeat it)
    done = recorder.done[0]
    assert done.code_interpreter.input == "print(17 * 23)" and "391" in done.code_interpreter.outputs[0].logs
    assert recorder.code == "print(17 * 23)"
    replies = (await client.beta.threads.messages.list(thread_id, run_id=final.id, order="asc")).data
    assert [reply.content[0].text.value for reply in replies] == ["Let me work it out. ", "It prints 391."]  # type: ignore[union-attr]
    assert all(reply.status == "completed" for reply in replies)


class _Plots(_SaysThenCodes):
    code = (
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\n"
        "with open('out.csv', 'w') as table:\n    table.write('a,b\\n')\n"
    )
    answer = "The figure is above; the table is in sandbox:/mnt/data/out.csv."


class _Figures(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []

    async def on_image_file_done(self, image_file: Any) -> None:
        self.images.append(image_file.file_id)


async def test_a_streamed_reply_shows_the_runs_figures_and_file_paths_as_deltas(
    start_oasis: Callable[..., Any],
) -> None:
    """The figure the code drew and the file it wrote reach the next message as an image part and a file_path
    annotation; streamed, they come as message deltas, so the SDK's handlers hear of them."""
    recorder = _Figures()
    run = await _streamed_upstream_run(start_oasis, _Plots, recorder, "Plot 1, 3, 2.")
    client, final = run.client, run.final
    assert final.status == "completed", final.last_error
    stored = (await client.beta.threads.messages.list(run.thread_id, run_id=final.id)).data[0]
    (image,) = [part.image_file.file_id for part in stored.content if part.type == "image_file"]
    assert recorder.images == [image]
    (path,) = stored.content[0].text.annotations  # type: ignore[union-attr]
    assert path.type == "file_path" and path.text == "sandbox:/mnt/data/out.csv"
    answer = next(message for message in run.shown if message.id == stored.id)
    seen = [note.type for note in answer.content[0].text.annotations]  # type: ignore[union-attr]
    assert seen == ["file_path"]


class _PlotsSilently(_Plots):
    answer = ""  # the figure says it all


async def test_a_streamed_reply_of_a_figure_alone_is_read_by_the_sdk(start_oasis: Callable[..., Any]) -> None:
    """A message with no text but the run's figure: the SDK reads its stream to the end (it kept the figure's
    place in the content and failed on a message without one)."""
    recorder = _Figures()
    run = await _streamed_upstream_run(start_oasis, _PlotsSilently, recorder, "Plot 1, 3, 2.")
    assert run.final.status == "completed", run.final.last_error
    stored = (await run.client.beta.threads.messages.list(run.thread_id, run_id=run.final.id)).data[0]
    assert [part.type for part in stored.content] == ["text", "image_file"]
    assert recorder.images == [stored.content[1].image_file.file_id]  # type: ignore[union-attr]


async def test_a_cancel_while_the_code_runs_stores_the_announced_step_cancelled(
    code_oasis: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream announced the tool step and its code; the run is cancelled while the code runs: the step can be
    retrieved, cancelled, with the code the stream showed."""
    client = code_oasis.sdk()
    assistant, thread, _ = await _setup(client)
    interpreter = code_oasis.container.code_interpreter
    run_code = interpreter.run
    running, release = asyncio.Event(), asyncio.Event()

    async def held(*args: Any) -> Any:
        running.set()
        await release.wait()
        return await run_code(*args)

    monkeypatch.setattr(interpreter, "run", held)
    recorder = _Recorder()

    async def read_stream() -> None:
        async with client.beta.threads.runs.stream(
            thread_id=thread.id,
            assistant_id=assistant.id,
            tool_choice=FORCED,
            max_completion_tokens=512,
            event_handler=recorder,
        ) as stream:
            await stream.until_done()

    reader = asyncio.create_task(read_stream())
    await asyncio.wait({reader, asyncio.create_task(running.wait())}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
    assert running.is_set(), "the model's code never ran"
    # The in-process transport hands the stream over whole at its end: the run is found by its thread meanwhile.
    run_id = (await client.beta.threads.runs.list(thread.id)).data[0].id
    await client.beta.threads.runs.cancel(run_id, thread_id=thread.id)
    release.set()
    await asyncio.wait_for(reader, 60)
    assert (await client.beta.threads.runs.retrieve(run_id, thread_id=thread.id)).status == "cancelled"
    (announced,) = [
        event.data.id
        for event in recorder.events
        if event.event == "thread.run.step.created" and event.data.type == "tool_calls"
    ]
    steps = {step.id: step for step in (await client.beta.threads.runs.steps.list(run_id, thread_id=thread.id)).data}
    step = steps[announced]
    assert step.status == "cancelled" and step.cancelled_at is not None
    (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
    assert call.type == "code_interpreter" and call.code_interpreter.input == recorder.code  # type: ignore[union-attr]
    assert call.code_interpreter.input  # type: ignore[union-attr]


async def test_figures_and_written_files_become_output_files_once(code_oasis: Harness) -> None:
    client = code_oasis.sdk()
    assistant, thread, _ = await _setup(client)
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tool_choice="none", max_completion_tokens=256
    )
    async with code_oasis.container.db.session() as session:
        row = (await session.scalars(select(Run).where(Run.id == run.id))).one()
    code = (
        "import pandas as pd\nimport matplotlib.pyplot as plt\n"
        "sales = pd.read_csv('sales.csv')\nsales.plot(x='month', y='amount')\n"
        "sales.assign(double=sales.amount * 2).to_csv('doubled.csv', index=False)\nint(sales.amount.sum())"
    )
    made = await code_oasis.container.code_interpreter.run(row, "call_test", code, 0)
    logs, image = made.outputs
    assert logs == {"type": "logs", "logs": "42\n"}
    assert image["type"] == "image"
    picture = await client.files.retrieve(image["image"]["file_id"])
    assert picture.purpose == "assistants_output"
    assert (await client.files.content(picture.id)).content.startswith(b"\x89PNG")
    (path, file_id) = next(iter(made.files.items()))
    assert path == "/mnt/data/doubled.csv"
    written = await client.files.retrieve(file_id)
    assert written.filename == "doubled.csv" and written.purpose == "assistants_output"
    assert (await client.files.content(file_id)).content == b"month,amount,double\njan,10,20\nfeb,32,64\n"
    # The same output of the same run and round (a run taken over after a crash) is stored once.
    again = await code_oasis.container.code_interpreter.run(row, "call_test", code, 0)
    assert again.files == made.files and again.outputs[1] == image
    # The run's files are in the session; a later call sees what earlier ones left.
    listing = "sorted(__import__('os').listdir())"
    followed = await code_oasis.container.code_interpreter.run(row, "call_next", listing, 1)
    assert followed.outputs[0]["logs"] == "['doubled.csv', 'sales.csv']\n"


def test_mentions_of_written_files_become_file_path_annotations() -> None:
    text = "Saved to sandbox:/mnt/data/doubled.csv and /mnt/data/doubled.csv; not /mnt/data/doubled.csv.bak"
    text += ". See sandbox:/mnt/data/doubled.csv."
    found = _file_paths(text, {"/mnt/data/doubled.csv": "file-abc"})
    assert [(a["text"], a["file_path"]["file_id"]) for a in found] == [
        ("sandbox:/mnt/data/doubled.csv", "file-abc"),
        ("/mnt/data/doubled.csv", "file-abc"),
        ("sandbox:/mnt/data/doubled.csv", "file-abc"),  # the sentence's full stop is not the name's
    ]
    assert all(text[a["start_index"] : a["end_index"]] == a["text"] for a in found)


async def test_without_a_sandbox_a_run_with_the_tool_is_refused_saying_why(
    start_oasis: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no bwrap to be found
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm()])
    client = harness.sdk()
    assistant, thread, _ = await _setup(client)  # assistants keep the tool
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert caught.value.code == "unsupported_tool" and caught.value.param == "assistant_id"
    assert "bubblewrap" in caught.value.message


async def test_a_file_replaced_under_the_same_name_is_placed_again(code_oasis: Harness) -> None:
    """The session keeps /mnt/data between runs; a new file under a name already there (a corrected sales.csv)
    must replace the old content, not be skipped because the name was placed."""
    from oasis.storage.tables import Assistant

    client = code_oasis.sdk()
    assistant, thread, first = await _setup(client)
    async with code_oasis.container.db.session() as session:
        row = await session.scalar(select(Assistant).where(Assistant.id == assistant.id))
    assert row is not None
    run = Run(id="run_placing", project_id=row.project_id, thread_id=thread.id, assistant_id=assistant.id)
    read = "print(open('/mnt/data/sales.csv').read())"
    before = await code_oasis.container.code_interpreter.run(run, "call_1", read, 0)
    corrected = await client.files.create(file=("sales.csv", b"month,amount\njan,11\n"), purpose="assistants")
    await client.beta.assistants.update(assistant.id, tool_resources={"code_interpreter": {"file_ids": [corrected.id]}})
    after = await code_oasis.container.code_interpreter.run(run, "call_2", read, 1)

    def logs(call: Any) -> str:
        return "".join(output["logs"] for output in call.outputs if output["type"] == "logs")

    assert "jan,10" in logs(before) and first
    assert "jan,11" in logs(after) and "jan,10" not in logs(after)
