"""The engine's own work between two decodes, with tokens drawn in Python or in llama.cpp's graph.

    python bench/step_draws.py [--gguf PATH] [--streams 8,16,64] [--sampling here,graph] [--temperature 0.8]

oasis's llama.cpp engine alone (no server): N streams start together and each generates `--tokens` tokens (end tokens
banned). Every llama_decode is timed; over the steps that decode one token for each of the N streams, the table
gives the median time a step spends inside llama_decode and outside it (picking the tokens, handing them to the event
loop, laying out the next batch), that outside time per stream, and the tokens per second of the whole run. With
`graph` (the engine's `backend_sampling`), llama.cpp draws inside the decode and the engine only reads the token. On a
GPU the decode is short and the outside time is what the card waits for; on a CPU it is what the cores spend on
something other than decoding. Settings take turns round by round; each keeps its best round (the highest tokens/s).

`--staggered`: N clients each send 3 requests in turn, of different lengths (`--tokens` to 1.25x, as
chat_vs_llama_server.py's staggered clients do), so that streams start and end at scattered times. Then every decode
counts (a new request's prompt too), and the cost of giving a chain to llama.cpp and taking it back (each makes it
reserve its scheduler again at the next decode) shows in the tokens per second and the mean decode.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
from typing import Any

import uvloop
from chat_vs_llama_server import PROMPT, default_gguf

from oasis.engines.llamacpp import native
from oasis.engines.llamacpp.engine import LlamaCppEngine
from oasis.engines.text import SamplingParams
from oasis.settings import ModelSpec


class DecodeClock:
    """Wraps llama_decode: the start and length of every decode of a full batch of `width` rows (of every decode
    where `width` is 0)."""

    def __init__(self) -> None:
        self.width = 0
        self.steps: list[tuple[float, float]] = []  # (start, seconds inside llama_decode)
        self._decode: Any = None

    def __enter__(self) -> DecodeClock:
        lib = native.lib()
        self._decode = decode = lib.llama_decode
        synchronize = lib.llama_synchronize

        def timed(context: Any, batch: Any) -> int:
            start = time.perf_counter()
            status = decode(context, batch)
            # A GPU's llama_decode returns once the graph is queued; the wait falls on the first read of its
            # results, which would count as time outside the decode (it did on the H200)
            synchronize(context)
            if self.width in (0, batch.n_tokens):
                self.steps.append((start, time.perf_counter() - start))
            return int(status)

        lib.llama_decode = timed
        return self

    def __exit__(self, *_: object) -> None:
        native.lib().llama_decode = self._decode


async def one_round(gguf: str, streams: int, sampling: str, args: argparse.Namespace) -> dict[str, float]:
    options: dict[str, object] = {"parallel": streams, "context_length": 512, "backend_sampling": sampling == "graph"}
    if args.threads:
        options["threads"] = args.threads
    engine = LlamaCppEngine(ModelSpec(id="bench", engine="llamacpp", path=gguf, options=options))
    await engine.start()
    prompt = engine.tokenize(PROMPT, add_special=True, parse_special=False)
    try:
        with DecodeClock() as clock:
            clock.width = 0 if args.staggered else streams

            async def stream(seed: int, tokens: int) -> int:
                params = SamplingParams(max_tokens=tokens, temperature=args.temperature, seed=seed, ignore_eos=True)
                return len([token async for token in engine.generate(prompt, params)])

            async def client(number: int) -> int:
                done = 0
                for request in range(3):
                    tokens = args.tokens + (number * 7 + request * 13) % (args.tokens // 4 + 1)
                    done += await stream(number * 100 + request, tokens)
                return done

            started = time.perf_counter()
            if args.staggered:
                generated = sum(await asyncio.gather(*(client(number) for number in range(streams))))
            else:
                generated = sum(await asyncio.gather(*(stream(seed, args.tokens) for seed in range(streams))))
            elapsed = time.perf_counter() - started
    finally:
        await engine.close()
    # Where the device lacks an operation of the chain, llama.cpp draws only part of it and the engine the rest.
    whole_in_graph = {"whole chain in graph": float(not engine._warned_partial_draws)} if sampling == "graph" else {}
    if args.staggered:
        inside_all = sum(seconds for _, seconds in clock.steps)
        return {
            "tok/s": generated / elapsed,
            "decodes": len(clock.steps),
            "decode ms": inside_all / len(clock.steps) * 1e3,
            "outside ms": (elapsed - inside_all) / len(clock.steps) * 1e3,
            "outside us/token": (elapsed - inside_all) / generated * 1e6,
        } | whole_in_graph
    # Between two full-width decodes a narrower one may fall (a prompt's chunk): the median leaves those out.
    steps = clock.steps
    inside = [seconds for _, seconds in steps[1:]]
    outside = [
        (start - previous_start) - previous_inside
        for (previous_start, previous_inside), (start, _) in itertools.pairwise(steps)
    ]
    return {
        "tok/s": generated / elapsed,
        "decode ms": statistics.median(inside) * 1e3,
        "outside ms": statistics.median(outside) * 1e3,
        "outside us/stream": statistics.median(outside) * 1e6 / streams,
        "steps": len(outside),
    } | whole_in_graph


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", default=None)
    parser.add_argument("--streams", default="8,16,64")
    parser.add_argument("--sampling", default="here,graph", help="where tokens are drawn: here (Python), graph")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp's threads (default: the engine's)")
    parser.add_argument("--staggered", action="store_true", help="clients sending requests of different lengths")
    args = parser.parse_args()
    gguf = args.gguf or str(default_gguf())
    levels = [int(level) for level in args.streams.split(",")]
    settings = args.sampling.split(",")
    best: dict[tuple[int, str], dict[str, float]] = {}
    for round_number in range(args.rounds):
        for streams in levels:
            order = settings if round_number % 2 == 0 else settings[::-1]
            for sampling in order:
                result = await one_round(gguf, streams, sampling, args)
                print(f"round {round_number + 1}: {streams} streams, drawn {sampling}: {result}", flush=True)
                kept = best.get((streams, sampling))
                if kept is None or result["tok/s"] > kept["tok/s"]:
                    best[(streams, sampling)] = result
    print(f"\n{os.cpu_count()} cores; temperature {args.temperature}; {args.tokens} tokens a stream", end="")
    print(f"; best of {args.rounds}" + ("; staggered: every decode, means" if args.staggered else ""))
    per = "token" if args.staggered else "stream"
    print(f"| streams | drawn | tok/s | decode ms/step | outside ms/step | outside us/{per} |")
    print("|---|---|---|---|---|---|")
    for (streams, sampling), result in best.items():
        print(
            f"| {streams} | {sampling} | {result['tok/s']:.0f} | {result['decode ms']:.2f} | "
            f"{result['outside ms']:.2f} | {result[f'outside us/{per}']:.0f} |"
        )


if __name__ == "__main__":
    uvloop.run(main())
