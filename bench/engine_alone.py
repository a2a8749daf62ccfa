"""oasis's llama.cpp engine with no server around it, for `chat_vs_llama_server.py --alternate --engine-alone`.

    python bench/engine_alone.py GGUF TEMPERATURE OPTIONS_JSON

Reads a line per stream from standard input (its max_tokens) and answers a line `RATE decode steady` (see
`paces`; other lines a library may print are not answers). The engine runs as `oasis serve` runs it (the same
options, uvloop), so that the difference to the served rate is what the server adds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import uvloop
from chat_vs_llama_server import PROMPT, paces

from oasis.engines.llamacpp.engine import LlamaCppEngine
from oasis.engines.text import SamplingParams
from oasis.settings import ModelSpec


async def main(gguf: str, temperature: float, options: dict[str, object]) -> None:
    engine = LlamaCppEngine(ModelSpec(id="bench", engine="llamacpp", path=gguf, options=options))
    await engine.start()
    prompt = engine.tokenize(PROMPT, add_special=True, parse_special=False)
    loop = asyncio.get_running_loop()
    seed = 0
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        seed += 1
        params = SamplingParams(max_tokens=int(line), temperature=temperature, seed=seed, ignore_eos=True)
        arrivals = [time.perf_counter() async for _ in engine.generate(prompt, params)]
        print("RATE", *paces(arrivals), flush=True)
    await engine.close()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])))
