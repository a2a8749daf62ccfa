"""The built-in code_interpreter tool of the Responses API, through the official SDK, on the real sandbox: on the
shipped SmolLM2 model, and on a scripted OpenAI-compatible model upstream for the exact flow (the model's code runs
in its container's session, the call is an output item with its code and, when included, its outputs; the model
reads what came out; a later response naming the container finds its variables). Bad tools are 400s and 404s."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest

from tests.api.test_code_interpreter import ASK, SALES, _fresh_run
from tests.api.test_responses import _newer_sdk, _plain, hosted_tool_agent
from tests.conftest import Harness, smollm
from tests.scripted_upstream import ScriptedChat, upstream_oasis

MODEL = "gpt-4o-mini"
AUTO: Any = {"type": "code_interpreter", "container": {"type": "auto"}}
INCLUDE = ["code_interpreter_call.outputs"]


@pytest.fixture
async def code_oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm()])
    return harness


async def test_the_models_code_runs_and_its_output_is_on_the_item(code_oasis: Harness) -> None:
    client = code_oasis.sdk()
    _newer_sdk(client)
    response = await client.responses.create(
        model=MODEL,
        input=ASK,
        instructions="Use python to answer.",
        tools=[AUTO],
        tool_choice="required",
        include=INCLUDE,  # type: ignore[list-item]
        temperature=0,
        max_output_tokens=160,
    )
    assert response.error is None
    call = response.output[0]
    assert call.type == "code_interpreter_call" and call.id.startswith("ci_") and call.status == "completed"
    assert call.container_id.startswith("cntr_") and call.code
    # What the item says came out is what the code prints in a sandbox of its own.
    (logs,) = call.outputs or []
    assert logs.type == "logs" and logs.logs == await _fresh_run(call.code)
    assert response.usage is not None and response.usage.output_tokens <= 160

    again = await client.responses.retrieve(response.id)
    assert again.output[0].model_dump() == call.model_dump()


class _Coder(ScriptedChat):
    """A model upstream that runs `code` (its arguments in pieces), and given the output says it."""

    received: list[dict[str, Any]] | None = []
    usage = {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38}
    code = "x = 6 * 7\nprint(x)"
    calls = 1  # calls made at once

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if body["messages"][-1]["role"] == "tool":
            return [{"role": "assistant", "content": f"It printed {body['messages'][-1]['content'].strip()}."}], "stop"
        arguments = json.dumps({"code": self.code})
        deltas: list[dict[str, Any]] = [{"role": "assistant"}]
        for index in range(self.calls):
            opening = {"index": index, "id": f"call_{index}", "type": "function"}
            deltas += [
                {"tool_calls": [{**opening, "function": {"name": "python", "arguments": ""}}]},
                {"tool_calls": [{"index": index, "function": {"arguments": arguments[:10]}}]},
                {"tool_calls": [{"index": index, "function": {"arguments": arguments[10:]}}]},
            ]
        return deltas, "tool_calls"


@pytest.fixture
async def coder_oasis(start_oasis: Callable[..., Any]) -> AsyncIterator[Harness]:
    _Coder.received = []
    _Coder.code = "x = 6 * 7\nprint(x)"
    _Coder.calls = 1
    async with upstream_oasis(start_oasis, _Coder) as harness:
        yield harness


async def test_a_streamed_run_shows_the_code_then_its_output_and_the_container_keeps_its_session(
    coder_oasis: Harness,
) -> None:
    client = coder_oasis.sdk()
    _newer_sdk(client)
    async with client.responses.stream(
        model="remote", input="What is six times seven?", tools=[AUTO], tool_choice="required"
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    call, message = final.output
    assert call.type == "code_interpreter_call" and call.code == _Coder.code and call.outputs is None
    assert message.type == "message"
    assert final.output_text == "It printed 42."
    kinds = [event.type for event in events]
    assert kinds[2:9] == [
        "response.output_item.added",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.output_item.done",
    ], kinds
    assert events[4].delta == _Coder.code and events[5].code == _Coder.code  # type: ignore[union-attr]
    assert "response.function_call_arguments.delta" not in kinds  # the call is the server's own
    assert final.usage is not None and final.usage.output_tokens == 16

    # The model was shown what the code printed, after its call.
    asked, answered = _Coder.received or []
    assert [tool["function"]["name"] for tool in asked["tools"]] == ["python"]
    call_message, output_message = answered["messages"][-2:]
    assert call_message["tool_calls"][0]["id"] == output_message["tool_call_id"] == call.id
    assert json.loads(call_message["tool_calls"][0]["function"]["arguments"]) == {"code": _Coder.code}
    assert output_message["content"].strip() == "42"
    # One more run is allowed, no longer forced (else the model could only ever call it).
    assert asked["tool_choice"] == "required" and answered["tool_choice"] == "auto" and "tools" in answered

    # A later response in the same container finds the variable the first one set.
    _Coder.code = "print(x + 1)"
    later = await client.responses.create(
        model="remote",
        input="And one more?",
        tools=[{"type": "code_interpreter", "container": call.container_id}],
        include=INCLUDE,  # type: ignore[list-item]
    )
    assert later.output[0].container_id == call.container_id  # type: ignore[union-attr]
    assert later.output[0].outputs[0].logs.strip() == "43"  # type: ignore[union-attr]
    assert later.output_text == "It printed 43."


async def test_files_go_into_the_container_and_figures_come_back_as_images(coder_oasis: Harness) -> None:
    client = coder_oasis.sdk()
    _newer_sdk(client)
    sales = await client.files.create(file=("sales.csv", SALES), purpose="assistants")
    _Coder.code = (
        "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "rows = open('/mnt/data/sales.csv').read().split()[1:]\n"
        "print(sum(int(row.split(',')[1]) for row in rows))\n"
        "plt.plot([1, 2]); plt.show()"
    )
    response = await client.responses.create(
        model="remote",
        input="Total sales?",
        tools=[{"type": "code_interpreter", "container": {"type": "auto", "file_ids": [sales.id]}}],
        include=INCLUDE,  # type: ignore[list-item]
    )
    outputs = response.output[0].outputs or []  # type: ignore[union-attr]
    assert [output.type for output in outputs] == ["logs", "image"]
    assert outputs[0].logs.strip() == "42"  # type: ignore[union-attr]
    url = outputs[1].url  # type: ignore[union-attr]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]).startswith(b"\x89PNG")
    # What the model read names the figure instead of its bytes.
    shown = (_Coder.received or [])[-1]["messages"][-1]["content"]
    assert shown.split("\n")[0].strip() == "42" and "[an image was shown to the user]" in shown


class _Saver(_Coder):
    """A model upstream whose code writes a file, and whose answer links to it."""

    code = (
        "open('/mnt/data/out.csv', 'w').write('a,b\\n1,2\\n')\n"
        "import os\nos.makedirs('/mnt/data/reports')\nopen('/mnt/data/reports/r.txt', 'w').write('r')\nprint('saved')"
    )

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if body["messages"][-1]["role"] == "tool":
            answer = "Here it is: [out.csv](sandbox:/mnt/data/out.csv)."
            return [{"role": "assistant", "content": answer}], "stop"
        return super().script(body)


async def test_files_the_code_writes_are_the_containers_files_cited_in_the_answer(
    start_oasis: Callable[..., Any],
) -> None:
    _Saver.received, _Saver.calls = [], 1
    async with upstream_oasis(start_oasis, _Saver) as harness:
        client = harness.sdk()
        _newer_sdk(client)
        async with client.responses.stream(model="remote", input="Save a table.", tools=[AUTO]) as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
        call, message = final.output
        assert call.type == "code_interpreter_call" and message.type == "message"
        container_id = call.container_id
        report, written = (await client.containers.files.list(container_id)).data
        assert written.path == "/mnt/data/out.csv" and written.source == "assistant" and written.bytes == 8
        assert report.path == "/mnt/data/reports/r.txt" and report.bytes == 1
        content = await client.containers.files.content.retrieve(written.id, container_id=container_id)
        assert content.read() == b"a,b\n1,2\n"

        (citation,) = message.content[0].annotations  # type: ignore[union-attr]
        assert citation.type == "container_file_citation" and citation.container_id == container_id
        assert citation.file_id == written.id and citation.filename == "out.csv"
        text = final.output_text
        assert text[citation.start_index : citation.end_index] == "sandbox:/mnt/data/out.csv"
        added = [event for event in events if event.type == "response.output_text.annotation.added"]
        assert [_plain(event.annotation) for event in added] == [citation.model_dump()]  # type: ignore[union-attr]
        # the `auto` container is one of the project's containers
        assert (await client.containers.retrieve(container_id)).status == "running"

        # the container's files outlive its session: a new session finds them in /mnt/data, folders and all
        await harness.container.sandboxes.end(f"default/{container_id}")
        _Saver.code = "print(open('/mnt/data/out.csv').read().split()[1] + open('/mnt/data/reports/r.txt').read())"
        later = await client.responses.create(
            model="remote",
            input="Read it back.",
            tools=[{"type": "code_interpreter", "container": container_id}],
            include=INCLUDE,  # type: ignore[list-item]
        )
        assert later.output[0].outputs[0].logs.strip() == "1,2r"  # type: ignore[union-attr]
        # reading them wrote nothing: the container still holds the two files as they were
        assert [file.id for file in (await client.containers.files.list(container_id)).data] == [report.id, written.id]

        # a deleted container ends its session and can no longer be named
        await client.containers.delete(container_id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(
                model="remote", input="Again.", tools=[{"type": "code_interpreter", "container": container_id}]
            )


async def test_calls_past_the_most_runs_a_response_makes_are_not_run(coder_oasis: Harness) -> None:
    client = coder_oasis.sdk()
    _newer_sdk(client)
    _Coder.code = "import os\nprint(os.getpid() > 0)"
    _Coder.calls = 3  # at once, where a response runs code at most twice
    response = await client.responses.create(
        model="remote",
        input="Run it three times.",
        tools=[AUTO],
        include=INCLUDE,  # type: ignore[list-item]
    )
    calls = [item for item in response.output if item.type == "code_interpreter_call"]
    assert [call.status for call in calls] == ["completed", "completed", "incomplete"]
    assert calls[2].outputs is None  # type: ignore[union-attr]
    # The model is told so, and answers without the tool (no runs left).
    answered = (_Coder.received or [])[-1]
    assert len(_Coder.received or []) == 2 and "tools" not in answered
    assert answered["messages"][-1]["content"] == "Not run: a response runs code at most 2 times."
    # streamed, the run left undone is not announced completed
    async with coder_oasis.http() as http:
        body = {"model": "remote", "input": "Run it three times.", "tools": [AUTO], "stream": True}
        reply = await http.post("/v1/responses", json=body)
    events = [json.loads(line[len("data: ") :]) for line in reply.text.splitlines() if line.startswith("data: ")]
    kinds = [event["type"] for event in events]
    assert kinds.count("response.code_interpreter_call.completed") == 2
    done = [event["item"]["status"] for event in events if event["type"] == "response.output_item.done"]
    assert done[:3] == ["completed", "completed", "incomplete"]


async def test_a_containers_memory_limit_bounds_its_sessions(coder_oasis: Harness) -> None:
    client = coder_oasis.sdk()
    _newer_sdk(client)
    # 3 GB of address space, mapped and never touched (no memory is used): more than 1g allows, less than 4g
    _Coder.code = (
        "import mmap\ntry:\n    mmap.mmap(-1, 3 << 30).close()\n    print('mapped')\n"
        "except OSError:\n    print('refused')"
    )
    ran: dict[str, str] = {}
    default = await client.containers.create(name="default")
    large = await client.containers.create(name="large", memory_limit="4g")
    assert default.memory_limit == "1g" and large.memory_limit == "4g"  # type: ignore[attr-defined]
    for container in (default, large):
        tool: Any = {"type": "code_interpreter", "container": container.id}
        response = await client.responses.create(model="remote", input="Map it.", tools=[tool], include=INCLUDE)  # type: ignore[list-item]
        ran[container.name] = response.output[0].outputs[0].logs.strip()  # type: ignore[union-attr]
    assert ran == {"default": "refused", "large": "mapped"}
    # a response's new container takes its memory_limit too
    auto: Any = {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}}
    response = await client.responses.create(model="remote", input="Map it.", tools=[auto], include=INCLUDE)  # type: ignore[list-item]
    call = response.output[0]
    assert call.outputs[0].logs.strip() == "mapped"  # type: ignore[union-attr]
    assert (await client.containers.retrieve(call.container_id)).memory_limit == "4g"  # type: ignore[union-attr,attr-defined]
    # more than this server gives a container (16g unless set), or not one of OpenAI's sizes: refused
    for memory_limit in ("64g", "2g"):
        with pytest.raises(openai.BadRequestError) as refused:
            await client.containers.create(name="huge", memory_limit=memory_limit)  # type: ignore[arg-type]
        assert refused.value.body["param"] == "memory_limit"  # type: ignore[index]
        huge: Any = {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": memory_limit}}
        with pytest.raises(openai.BadRequestError) as refused:
            await client.responses.create(model="remote", input="Map it.", tools=[huge])
        assert refused.value.body["param"] == "tools[0].container.memory_limit"  # type: ignore[index]
    async with coder_oasis.http() as http:  # not a size at all
        reply = await http.post("/v1/containers", json={"name": "odd", "memory_limit": ["4g"]})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "memory_limit"
    assert len(_Coder.received or []) == 6  # the refused requests asked the model nothing


async def test_a_generation_after_a_run_counts_against_the_token_limit(start_oasis: Callable[..., Any]) -> None:
    _Coder.received, _Coder.code, _Coder.calls = [], "print('x' * 12000)", 1
    # the request is counted as it comes (a few tokens); the second generation reads the 4000 characters printed
    async with upstream_oasis(start_oasis, _Coder, rate_limits={"tokens_per_minute": 600}) as harness:
        client = harness.sdk()
        _newer_sdk(client)
        response = await client.responses.create(model="remote", input="Print it.", tools=[AUTO])
        # the response ends failed (not a 429 the SDK would send again, running the code again)
        assert response.status == "failed" and response.error is not None
        assert response.error.code == "rate_limit_exceeded"
        assert [item.type for item in response.output] == ["code_interpreter_call"]
        assert response.output[0].status == "completed"  # type: ignore[union-attr]
        assert len(_Coder.received or []) == 1  # the model was not asked again


async def test_bad_code_tools_are_refused_before_anything_is_generated(code_oasis: Harness) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"tools": [{"type": "code_interpreter"}]}, 400, "tools[0].container"),
        ({"tools": [{"type": "code_interpreter", "container": {"type": "big"}}]}, 400, "tools[0].container"),
        (
            {"tools": [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-none"]}}]},
            404,
            "tools[0].container.file_ids",
        ),
        ({"tools": [{"type": "code_interpreter", "container": "cntr_unknown"}]}, 404, "tools[0].container"),
        ({"tools": [AUTO, AUTO]}, 400, "tools[1]"),
        ({"tools": [AUTO, {"type": "function", "name": "python"}]}, 400, "tools[1].name"),
        ({"tool_choice": {"type": "code_interpreter"}}, 400, "tool_choice"),
    ]
    async with code_oasis.http() as http:
        for body, status, param in cases:
            reply = await http.post("/v1/responses", json={"model": MODEL, "input": "hi", **body})
            assert reply.status_code == status, (body, reply.text)
            error = reply.json()["error"]
            assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error", body


async def test_a_fault_of_the_servers_own_ends_the_stream_as_a_failed_response(
    coder_oasis: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    # the code ran; asking the model again fails for a reason no error of the API's names
    monkeypatch.setattr(coder_oasis.container.responses, "_after_tools", broken)
    body = {"model": "remote", "input": "What is six times seven?", "tools": [AUTO], "stream": True}
    async with coder_oasis.http() as http:
        reply = await http.post("/v1/responses", json=body)
    assert reply.status_code == 200
    events = [json.loads(line[len("data: ") :]) for line in reply.text.splitlines() if line.startswith("data: ")]
    assert [event["type"] for event in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == "server_error" and "a bug" not in events[-2]["message"]  # no internals shown
    failed = events[-1]["response"]
    assert [(item["type"], item["status"]) for item in failed["output"]] == [("code_interpreter_call", "completed")]


async def test_the_agents_sdks_hosted_code_interpreter_runs_the_code_here(coder_oasis: Harness) -> None:
    """OpenAI's Agents SDK with its hosted CodeInterpreterTool: the code runs in oasis's sandbox, the SDK reads the
    call as a tool call item (whole and streamed), and the agent answers from its output."""
    agents, agent = hosted_tool_agent(coder_oasis.sdk(), "CodeInterpreterTool", tool_config=AUTO)
    result = await agents.Runner.run(agent, "What is six times seven?", max_turns=2)
    (ran,) = [item.raw_item for item in result.new_items if item.type == "tool_call_item"]
    assert ran.type == "code_interpreter_call" and ran.status == "completed" and ran.code == _Coder.code
    assert result.final_output == "It printed 42."

    streamed = agents.Runner.run_streamed(agent, "And again?", max_turns=2)
    seen = [event async for event in streamed.stream_events()]
    made = [
        event.item.raw_item for event in seen if event.type == "run_item_stream_event" and event.name == "tool_called"
    ]
    assert [call.type for call in made] == ["code_interpreter_call"]
    assert streamed.final_output == "It printed 42."
