"""kill -9 of `oasis serve` while a background response is generated, then a restart: the response is generated
again from its start and ends with one answer, added to its conversation once, and streamed again its events
are the second generation's (numbered after the first's: a number never names two events)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import openai
import pytest

from tests.conftest import _empty_postgres
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
