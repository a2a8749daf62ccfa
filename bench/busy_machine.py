"""Decoding on a machine that is doing something else too: oasis's default (threads adapted to the free cores)
against fixed thread counts and llama-server, with 0, 1 and 2 busy processes beside them.

    python bench/busy_machine.py --llama-server PATH/llama-server [--rounds 3] [--max-tokens 48]

llama.cpp's threads spin at barriers, so when another process wants one of the cores a decoding step waits for a
descheduled thread. A "busy process" is `python -c "while True: pass"`, as a build or a browser tab keeps a core.
Each request is one streamed /v1/completions of --max-tokens tokens at temperature 0.8 (`ignore_eos`); its rate is
tokens over the whole request's time. The sides are interleaved within each round (in a rotating order) and each
side's best and median are kept. Target (issue 12): under 1 and 2 busy processes the default keeps at least half
of the best fixed `threads` setting's rate, and on a quiet machine it loses nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from chat_vs_llama_server import PROMPT, default_gguf
from serving import free_port, oasis_environment, running

REQUEST_TIMEOUT = 120.0


@contextlib.contextmanager
def oasis(gguf: Path, options: dict[str, object]) -> Iterator[str]:
    port, folder = free_port(), Path(tempfile.mkdtemp())
    spec = {"id": "bench", "engine": "llamacpp", "path": str(gguf), "options": {"context_length": 1024, **options}}
    (folder / "oasis.yaml").write_text(json.dumps({"models": [spec], "defaults": False}))
    command = [
        sys.executable, "-m", "oasis", "serve", "--port", str(port),
        "--config", str(folder / "oasis.yaml"), "--data-dir", str(folder / "data"),
    ]  # fmt: skip
    with running("oasis", command, port, folder / "oasis.log", oasis_environment()) as base:
        yield base


@contextlib.contextmanager
def llama_server(binary: Path, gguf: Path, threads: int) -> Iterator[str]:
    port, folder = free_port(), Path(tempfile.mkdtemp())
    command = [
        str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-c", "1024", "-np", "1",
        "-t", str(threads), "-tb", str(threads), "--no-webui",
    ]  # fmt: skip
    with running("llama-server", command, port, folder / "llama-server.log") as base:
        yield base


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(1.0)  # let the adaptive side see them, as it would see any program already running
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def tokens_per_second(base: str, max_tokens: int, seed: int) -> float:
    body = {
        "model": "bench", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0.8, "seed": seed,
        "stream": True, "ignore_eos": True,
    }  # fmt: skip
    started = time.perf_counter()
    tokens = 0
    try:
        with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=REQUEST_TIMEOUT) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    event = json.loads(line[6:])
                    tokens += bool(event.get("choices") and event["choices"][0].get("text"))
                if time.perf_counter() - started > REQUEST_TIMEOUT:
                    break
    except httpx.TimeoutException:
        pass
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", type=Path, required=True)
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--busy", default="0,1,2", help="numbers of busy processes, comma-separated")
    args = parser.parse_args()
    gguf = args.gguf or default_gguf()
    cores = len(os.sched_getaffinity(0))
    sides = {
        "oasis default (adapts)": lambda: oasis(gguf, {"parallel": 1}),
        f"oasis threads={cores} fixed": lambda: oasis(gguf, {"parallel": 1, "threads": cores, "adapt_threads": False}),
        "oasis threads=1 fixed": lambda: oasis(gguf, {"parallel": 1, "threads": 1, "adapt_threads": False}),
        f"llama-server -t {cores}": lambda: llama_server(args.llama_server, gguf, cores),
        "llama-server -t 1": lambda: llama_server(args.llama_server, gguf, 1),
    }
    loads = [int(count) for count in args.busy.split(",")]
    results: dict[tuple[str, int], list[float]] = {(side, load): [] for side in sides for load in loads}
    with contextlib.ExitStack() as stack:
        bases = {side: stack.enter_context(start()) for side, start in sides.items()}
        for base in bases.values():
            tokens_per_second(base, 8, 0)  # warm up: first-request costs are not what this measures
        names = list(sides)
        for round_number in range(args.rounds):
            for load in loads:
                with busy_processes(load):
                    order = names[round_number % len(names) :] + names[: round_number % len(names)]
                    for side in order:
                        rate = tokens_per_second(bases[side], args.max_tokens, seed=round_number)
                        results[(side, load)].append(rate)
                        print(f"round {round_number + 1}, {load} busy: {side}: {rate:.1f} tok/s", file=sys.stderr)

    print(f"\nMachine: {platform.processor() or platform.machine()}, {cores} cores; {gguf.name}; "
          f"{args.max_tokens} tokens at temperature 0.8, {args.rounds} rounds; tok/s best (median)\n")  # fmt: skip
    print("| side | " + " | ".join(f"{load} busy" for load in loads) + " |")
    print("|---|" + "---|" * len(loads))
    for side in sides:
        cells = [f"{max(results[(side, load)]):.1f} ({statistics.median(results[(side, load)]):.1f})" for load in loads]
        print(f"| {side} | " + " | ".join(cells) + " |")
    print()
    for load in loads:
        best_fixed = max(max(results[(side, load)]) for side in sides if side.startswith("oasis threads="))
        default = max(results[("oasis default (adapts)", load)])
        print(f"{load} busy: default / best fixed oasis setting = {default / best_fixed:.2f}")


if __name__ == "__main__":
    main()
