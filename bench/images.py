"""The default image model: seconds per image by size and n (the issue's targets: 256x256 under 3 s, 1024x1024
under 6 s on 2 cores), and its held-out evaluation split by what was asked (issue 17). Engine-level, so the times
are the drawing and enlarging, not HTTP. No peer: no other OpenAI-compatible server ships a text-to-image model.

    .venv/bin/python bench/images.py [--seeds 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict

import numpy as np

from oasis.engines.image import GenerationJob
from oasis.engines.shapes import scenes
from oasis.engines.shapes.engine import ShapesEngine
from oasis.settings import ModelSpec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    engine = ShapesEngine(ModelSpec(id="oasis-shapes-32", engine="shapes"))
    asyncio.run(engine.start())
    engine.generate(GenerationJob("a red circle", 1, 256, 256))  # warm

    print("| size | n | best s | median s |\n|---|---|---|---|")
    for width, height, n in [(256, 256, 1), (512, 512, 1), (1024, 1024, 1), (1792, 1024, 1), (256, 256, 4)]:
        times = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            engine.generate(GenerationJob("two blue stars at the top", n, width, height))
            times.append(time.perf_counter() - started)
        print(f"| {width}x{height} | {n} | {min(times):.2f} | {float(np.median(times)):.2f} |")

    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for index, (prompt, group) in enumerate(scenes.held_out_prompts()):
        images = engine.model.sample(prompt, args.seeds, np.random.default_rng(index), steps=20, guidance=3.0)
        kind = f"count {group.count}, " + ("no position" if group.position is None else "a position")
        for image in images:
            finding = scenes.check(image, group)
            for key in (kind, "all"):
                totals[key][0] += 1
                totals[key][1] += finding.placed
                totals[key][2] += finding.ok
    print("\n| held-out prompts | samples | colour and place right | all right (count too) |\n|---|---|---|---|")
    for kind, (samples, placed, right) in sorted(totals.items()):
        print(f"| {kind} | {samples} | {placed / samples:.0%} | {right / samples:.0%} |")


if __name__ == "__main__":
    main()
