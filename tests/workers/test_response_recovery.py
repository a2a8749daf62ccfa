"""kill -9 of `oasis serve` while a background response is generated, then a restart: the response is generated
again from its start and ends with one answer, added to its conversation once, and streamed again its events
are the second generation's (numbered after the first's: a number never names two events). A response that had
made an MCP tool call resumes after it: the call is not made again, whether it had finished or was cut off."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.api.test_responses_mcp import _McpServer
from tests.conftest import _empty_postgres
from tests.scripted_upstream import ScriptedChat
from tests.server_process import oasis_env, oasis_server
from tests.workers.test_run_recovery import CONFIG, STORY

FINAL = ("completed", "incomplete", "failed", "cancelled")


def test_kill_9_mid_background_response_then_restart_answers_it_once(tmp_path: Path, postgres_url: str | None) -> None:
    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    data = tmp_path / "data"
    config = tmp_path / "oasis.yaml"
    config.write_text(CONFIG)
    env = oasis_env(postgres_url)

    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        if not hasattr(client, "conversations"):
            pytest.skip("this SDK has no Conversations API")
        conversation = client.conversations.create()
        queued = client.responses.create(
            model="gpt-4o-mini", input=STORY, conversation=conversation.id, background=True, max_output_tokens=300
        )
        deadline = time.monotonic() + 60
        stream = client.responses.retrieve(queued.id, stream=True)
        for event in stream:  # its answer has begun
            assert time.monotonic() < deadline, server.log()
            if event.type == "response.output_text.delta":
                break
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()

    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        deadline = time.monotonic() + 240
        while (response := client.responses.retrieve(queued.id)).status not in FINAL:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert response.status in ("completed", "incomplete"), response.error
        assert [item.type for item in response.output] == ["message"] and response.output_text
        items = client.conversations.items.list(conversation.id, order="asc").data
        assert [item.type for item in items] == ["message", "message"]
        assert items[1].id == response.output[0].id
        events = list(client.responses.retrieve(queued.id, stream=True))
        # the creation's two events, then the second generation's, numbered after those of the first
        numbers = [event.sequence_number for event in events]
        assert numbers[:2] == [0, 1] and numbers[2] > 2
        assert numbers[2:] == list(range(numbers[2], numbers[2] + len(numbers) - 2))
        assert [event.type for event in events[:3]] == ["response.created", "response.queued", "response.in_progress"]
        assert events[-1].type == f"response.{response.status}"
        text = "".join(event.delta for event in events if event.type == "response.output_text.delta")  # type: ignore[union-attr]
        assert text == response.output_text


class _HeldMcp(_McpServer):
    """The MCP server, whose `add` does not answer while `held` is clear."""

    held = threading.Event()

    def calling(self) -> None:
        self.held.wait(60)


class _Adder(ScriptedChat):
    """Calls `add`, then, once shown its output, says it (keeping its answer while `held` is clear)."""

    received: list[dict[str, Any]] | None = []
    held = threading.Event()
    first_held = threading.Event()  # keeps the first answer (the call) while clear

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        last = body["messages"][-1]
        if str(last["content"]).startswith("Your context is about to be compacted"):  # server-side compaction
            return [{"role": "assistant", "content": "The user asks for 2 + 3."}], "stop"
        if last["role"] != "tool":
            self.first_held.wait(60)
        if last["role"] == "tool":
            self.held.wait(60)
            return [{"role": "assistant", "content": f"The sum is {last['content']}"}], "stop"
        call = {"index": 0, "id": "call_0", "type": "function", "function": {"name": "add", "arguments": ""}}
        return [
            {"role": "assistant", "content": "Adding."},
            {"tool_calls": [call]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 2, "b": 3}'}}]},
        ], "tool_calls"


def _served(handler: type[http.server.BaseHTTPRequestHandler]) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def loopback_parts() -> Iterator[tuple[str, str]]:
    """(the model upstream's URL, the MCP server's URL), both answering at once until a test clears `held`."""
    _HeldMcp.requests, _Adder.received = [], []
    _HeldMcp.held.set()
    _Adder.held.set()
    _Adder.first_held.set()
    upstream, upstream_url = _served(_Adder)
    mcp, mcp_url = _served(_HeldMcp)
    try:
        yield f"{upstream_url}/v1", f"{mcp_url}/mcp"
    finally:
        _HeldMcp.held.set()
        _Adder.held.set()
        _Adder.first_held.set()
        for server in (upstream, mcp):
            server.shutdown()
            server.server_close()


def _mcp_calls() -> list[dict[str, Any]]:
    return [request for request in _HeldMcp.requests if request.get("method") == "tools/call"]


def _remote_config(folder: Path, upstream_url: str) -> Path:
    """A config whose one model `remote` is the scripted upstream, with short leases (a dead worker's lapses soon)."""
    model = {"id": "remote", "engine": "upstream", "options": {"base_url": upstream_url, "model": "theirs"}}
    config = folder / "oasis.yaml"
    config.write_text(json.dumps({"defaults": False, "models": [model], "workers": {"lease_seconds": 1.0}}))
    return config


def _finished(client: openai.OpenAI, response_id: str, server: Any) -> Any:
    """The response once it has ended, which must be completed."""
    deadline = time.monotonic() + 60
    while (response := client.responses.retrieve(response_id)).status not in FINAL:
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    assert response.status == "completed", response.error
    return response


def _wait_for(condition: Any, server: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


@pytest.mark.parametrize("cut", ["after_the_call", "during_the_call"])
def test_kill_9_after_an_mcp_call_resumes_without_calling_again(
    tmp_path: Path, postgres_url: str | None, loopback_parts: tuple[str, str], cut: str
) -> None:
    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    upstream_url, mcp_url = loopback_parts
    data, config = tmp_path / "data", _remote_config(tmp_path, upstream_url)
    env = oasis_env(postgres_url)
    tool = {"type": "mcp", "server_label": "calc", "server_url": mcp_url, "require_approval": "never"}

    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        if not hasattr(client, "conversations"):
            pytest.skip("this SDK has no background responses")
        (_HeldMcp if cut == "during_the_call" else _Adder).held.clear()
        queued = client.responses.create(model="remote", input="What is 2 + 3?", tools=[tool], background=True)
        if cut == "during_the_call":
            _wait_for(lambda: len(_mcp_calls()) == 1, server)
        else:  # the model was asked again with the call's output
            _wait_for(lambda: len(_Adder.received or []) == 2, server)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()

    _HeldMcp.held.set()
    _Adder.held.set()
    asked_before = len(_Adder.received or [])
    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        response = _finished(client, queued.id, server)
        assert len(_mcp_calls()) == 1  # made once, not again by the generation that took over
        # resumed after the call: the model was asked only to answer with its output, not to call it again
        after = (_Adder.received or [])[asked_before:]
        assert [body["messages"][-1]["role"] for body in after] == ["tool"]
        types = [item.type for item in response.output]
        assert types == ["mcp_list_tools", "message", "mcp_call", "message"]
        said, call = response.output[1], response.output[2]
        assert said.content[0].text == "Adding."  # type: ignore[union-attr]
        assert call.name == "add" and json.loads(call.arguments) == {"a": 2, "b": 3}  # type: ignore[union-attr]
        if cut == "after_the_call":
            assert call.status == "completed" and call.output == "5"  # type: ignore[union-attr]
            assert response.output_text == "Adding.The sum is 5"
        else:  # cut off while it ran: failed, and the model was told so
            assert call.status == "failed" and call.output is None  # type: ignore[union-attr]
            assert "cut off" in (call.error or "")  # type: ignore[union-attr]
            assert after[0]["messages"][-1]["content"] == call.error  # type: ignore[union-attr]
        # streamed again: the items in order, each once, with the answer's text
        events = list(client.responses.retrieve(queued.id, stream=True))
        assert [event.type for event in events[:3]] == ["response.created", "response.queued", "response.in_progress"]
        done = [event.item.id for event in events if event.type == "response.output_item.done"]  # type: ignore[union-attr]
        assert done == [item.id for item in response.output]
        text = "".join(event.delta for event in events if event.type == "response.output_text.delta")  # type: ignore[union-attr]
        assert text == response.output_text
        numbers = [event.sequence_number for event in events]
        assert numbers == sorted(set(numbers))
        assert events[-1].type == "response.completed"


@pytest.mark.parametrize("cut", ["before_the_answer", "after_the_call"])
def test_kill_9_after_compacting_resumes_from_the_summary(
    tmp_path: Path, postgres_url: str | None, loopback_parts: tuple[str, str], cut: str
) -> None:
    """A background response that compacted its conversation (`context_management`), killed while the model was
    first asked (a forced tool choice) or after its MCP call: the generation that takes over reads the summary the
    dead one made, and neither compacts again nor calls again; asked for the first time, the model is asked as the
    request asked (its own tool choice, not as after calls)."""
    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    upstream_url, mcp_url = loopback_parts
    data, config = tmp_path / "data", _remote_config(tmp_path, upstream_url)
    env = oasis_env(postgres_url)
    tool = {"type": "mcp", "server_label": "calc", "server_url": mcp_url, "require_approval": "never"}
    compacting = {"context_management": [{"type": "compaction", "compact_threshold": 1}]}
    holding, requests_before_kill = (
        (_Adder.first_held, 2) if cut == "before_the_answer" else (_Adder.held, 3)  # summarized, asked (, called)
    )

    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        if not hasattr(client, "conversations"):
            pytest.skip("this SDK has no background responses")
        holding.clear()
        queued = client.responses.create(
            model="remote",
            input="What is 2 + 3?",
            tools=[tool],
            tool_choice="required",
            background=True,
            extra_body=compacting,
        )
        _wait_for(lambda: len(_Adder.received or []) == requests_before_kill, server)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()

    holding.set()
    asked_before = len(_Adder.received or [])
    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        response = _finished(client, queued.id, server)
        assert len(_mcp_calls()) == 1
        after = (_Adder.received or [])[asked_before:]  # no second summary
        assert len(after) == (2 if cut == "before_the_answer" else 1)
        read = after[0]["messages"]
        assert read[0]["role"] == "user" and read[0]["content"].endswith("The user asks for 2 + 3.")
        if cut == "before_the_answer":
            assert after[0]["tool_choice"] == "required"
            assert [message["role"] for message in read] == ["user", "user"]
        else:
            assert [message["role"] for message in read] == ["user", "user", "assistant", "tool"]
        types = [item.type for item in response.output]
        assert types == ["compaction", "mcp_list_tools", "message", "mcp_call", "message"]
        assert response.output_text == "Adding.The sum is 5"


class _Runner(ScriptedChat):
    """Writes a file with python; shown that it ran, reads it back with python (keeping that call while `held`
    is clear); shown what it read, says it."""

    received: list[dict[str, Any]] | None = []
    held = threading.Event()
    writes = "open('/mnt/data/kept.txt', 'w').write('kept'); print('wrote')"
    reads = "print(open('/mnt/data/kept.txt').read())"

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        outputs = [message["content"] for message in body["messages"] if message["role"] == "tool"]
        if len(outputs) == 2:
            return [{"role": "assistant", "content": f"It read {outputs[1].strip()}."}], "stop"
        if outputs:
            self.held.wait(60)
        code = self.reads if outputs else self.writes
        call = {"index": 0, "id": f"call_{len(outputs)}", "type": "function"}
        function = {"name": "python", "arguments": json.dumps({"code": code})}
        return [{"role": "assistant", "tool_calls": [{**call, "function": function}]}], "tool_calls"


def test_kill_9_after_a_code_run_resumes_in_the_same_container(tmp_path: Path, postgres_url: str | None) -> None:
    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    _Runner.received = []
    _Runner.held.clear()
    upstream, upstream_url = _served(_Runner)
    data, config = tmp_path / "data", _remote_config(tmp_path, f"{upstream_url}/v1")
    env = oasis_env(postgres_url)
    tool: Any = {"type": "code_interpreter", "container": {"type": "auto"}}
    try:
        with oasis_server(data, env, "--config", str(config)) as server:
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
            if not hasattr(client, "containers"):
                pytest.skip("this SDK has no background responses")
            queued = client.responses.create(
                model="remote",
                input="Keep a file, then read it.",
                tools=[tool],
                include=["code_interpreter_call.outputs"],
                background=True,
            )
            _wait_for(lambda: len(_Runner.received or []) == 2, server)  # the file was written, the model asked again
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait()

        _Runner.held.set()
        with oasis_server(data, env, "--config", str(config)) as server:
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
            response = _finished(client, queued.id, server)
            wrote, read, said = response.output
            assert wrote.type == read.type == "code_interpreter_call" and said.type == "message"
            # the second run is in the container the first wrote its file to, and finds it there
            assert wrote.container_id == read.container_id  # type: ignore[union-attr]
            assert read.outputs[0].logs.strip() == "kept"  # type: ignore[union-attr]
            assert response.output_text == "It read kept."
            (container,) = client.containers.list().data
            assert container.id == wrote.container_id  # type: ignore[union-attr]
            assert [file.path for file in client.containers.files.list(container.id).data] == ["/mnt/data/kept.txt"]
            # the write was not run again: the model was asked to go on from it (by the dead worker, then again)
            shown = [sum(message["role"] == "tool" for message in body["messages"]) for body in _Runner.received or []]
            assert shown == [0, 1, 1, 2]
    finally:
        _Runner.held.set()
        upstream.shutdown()
        upstream.server_close()
