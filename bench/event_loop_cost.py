"""The CPU time oasis's event loop spends per streamed token, and what an idle server spends per second.

    python bench/event_loop_cost.py [--gguf FILE] [--streams 6] [--max-tokens 256] [--idle-seconds 20]

On a machine with few cores the event loop shares them with llama.cpp's threads, which spin at barriers: each
millisecond the loop runs while a token decodes is, more or less, a millisecond added to that token. Throughput
comparisons on a noisy machine cannot show differences of a few percent; the loop's own CPU time per token can.
It is read from /proc (the main thread's run time in schedstat) around one stream at a time at temperature 0.8,
through /v1/completions and /v1/chat/completions, together with the main thread's CPU per request (max_tokens 1:
what a request costs besides its tokens, included in the per-token figure) and each thread's CPU per second while
idle.
llama-server's HTTP thread, for comparison, is measured the same way with `--llama-server PATH`, and the minimal server
of `chat_vs_llama_server.py --control` (the same engine behind one ASGI function) with `--control`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import httpx
from chat_vs_llama_server import default_gguf, server


def _threads(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of `pid`: its name and CPU seconds so far, from the scheduler's own count in nanoseconds
    (schedstat's first field; the utime and stime of `stat` are charged in whole clock ticks of 10 ms)."""
    found = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:  # the thread has ended
            continue
        try:
            seconds = int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0]) / 1e9
        except OSError:  # a kernel without schedstat: clock ticks, coarse but there
            fields = stat[stat.rindex(")") + 2 :].split()
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        found[int(task)] = (stat[stat.index("(") + 1 : stat.rindex(")")], seconds)
    return found


def _stream(client: httpx.Client, base: str, endpoint: str, model: str, seed: int, max_tokens: int) -> int:
    body: dict[str, object] = {
        "model": model, "max_tokens": max_tokens, "temperature": 0.8, "seed": seed, "stream": True,
        "ignore_eos": True,
    }  # fmt: skip
    if endpoint == "completions":
        body["prompt"] = "Once upon a time"
    else:
        body["messages"] = [{"role": "user", "content": "Tell me a long story."}]
    chunks = 0
    with client.stream("POST", f"{base}/v1/{endpoint}", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            chunks += line.startswith("data: {")
    return chunks


def _measure(
    pid: int, base: str, model: str, streams: int, max_tokens: int, idle_seconds: float, endpoints: tuple[str, ...]
) -> list[str]:
    rows = []
    # A connection per request, on both servers (llama-server closed a kept-alive one between requests).
    with httpx.Client(timeout=300, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for endpoint in endpoints:
            _stream(client, base, endpoint, model, 0, max_tokens)  # warm
            before = _threads(pid)
            tokens = sum(_stream(client, base, endpoint, model, seed + 1, max_tokens) for seed in range(streams))
            after = _threads(pid)
            main = after[pid][1] - before[pid][1]
            others = sorted(
                ((after[t][1] - before[t][1], after[t][0]) for t in after if t in before and t != pid), reverse=True
            )
            start = _threads(pid)[pid][1]
            for seed in range(20):
                _stream(client, base, endpoint, model, 100 + seed, 1)
            per_request = (_threads(pid)[pid][1] - start) / 20
            top = ", ".join(f"{name} {used * 1e6 / tokens:.0f}" for used, name in others[:3])
            rows.append(f"| /v1/{endpoint} | {main * 1e6 / tokens:.0f} | {per_request * 1e3:.1f} | {top} |")
    before = _threads(pid)
    time.sleep(idle_seconds)
    after = _threads(pid)
    idle = sum(after[t][1] - before[t][1] for t in after if t in before) / idle_seconds
    rows.append(
        f"| idle | {(after[pid][1] - before[pid][1]) * 1e3 / idle_seconds:.1f} ms/s (main) | |"
        f" {idle * 1e3:.1f} ms/s in all |"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path)
    parser.add_argument("--streams", type=int, default=6, help="one-at-a-time streams per endpoint")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--llama-server", type=Path, help="also measure llama-server's threads the same way")
    parser.add_argument(
        "--control",
        action="store_true",
        help="also the same engine behind a minimal ASGI server (bench/minimal_server.py; /v1/completions only)",
    )
    args = parser.parse_args()
    gguf = args.gguf or default_gguf()
    print(
        f"model {gguf.name}, {args.threads} threads, {args.streams} streams of {args.max_tokens} tokens, one at a time"
    )
    print("| endpoint | main thread µs/token | main thread ms/request | busiest other threads µs/token |")
    print("|---|---|---|---|")
    sides = ["oasis", *(["minimal server"] if args.control else []), *(["llama-server"] if args.llama_server else [])]
    for kind in sides:
        # The servers as chat_vs_llama_server.py starts them: 4 slots of 2048 tokens.
        with server(kind, gguf, 4, 2048, args.threads, args.llama_server or Path("llama-server")) as (base, process):
            if kind == "llama-server":
                print("llama-server (its main thread is the decode loop; its HTTP threads are among the others):")
            elif kind == "minimal server":
                print("minimal server (the same engine behind one ASGI function on uvicorn):")
            endpoints = ("completions",) if kind == "minimal server" else ("completions", "chat/completions")
            rows = _measure(process.pid, base, "bench", args.streams, args.max_tokens, args.idle_seconds, endpoints)
            for row in rows:
                print(row)


if __name__ == "__main__":
    main()
