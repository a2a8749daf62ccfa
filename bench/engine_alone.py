"""oasis's llama.cpp engine with no server around it, for `chat_vs_llama_server.py --alternate --engine-alone`.

    python bench/engine_alone.py GGUF CONTEXT THREADS TEMPERATURE ADAPT_THREADS

Reads a line per stream from standard input (its max_tokens) and answers a line `RATE decode steady`: the stream's
decode rate (tokens after the first over the time since the first) and the rate its median time between tokens
gives (other lines a library may print are not answers). The engine runs
as `oasis serve` runs it (same options, uvloop), so that the difference to the served rate is what the server adds.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import sys
import time

import uvloop
from chat_vs_llama_server import PROMPT

from oasis.engines.llamacpp.engine import LlamaCppEngine
from oasis.engines.text import SamplingParams
from oasis.settings import ModelSpec


async def main(gguf: str, context: int, threads: int, temperature: float, adapt_threads: bool) -> None:
    options = {
        "parallel": 1, "context_length": context, "threads": threads, "batch_size": 512, "adapt_threads": adapt_threads,
    }  # fmt: skip
    engine = LlamaCppEngine(ModelSpec(id="bench", engine="llamacpp", path=gguf, options=options))
    await engine.start()
    prompt = engine.tokenize(PROMPT, add_special=True, parse_special=False)
    loop = asyncio.get_running_loop()
    seed = 0
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        seed += 1
        params = SamplingParams(max_tokens=int(line), temperature=temperature, seed=seed, ignore_eos=True)
        arrivals = [time.perf_counter() async for _ in engine.generate(prompt, params)]
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        print("RATE", (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]), 1 / statistics.median(gaps), flush=True)
    await engine.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "adapt"))
