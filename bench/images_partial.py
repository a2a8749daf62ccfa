"""What streamed partial images cost: `oasis serve` with the shipped shapes model only, streamed generations at
1024x1024 (PNG) asking for 0, 1 and 3 partial images, interleaved round by round. Prints the time to the first event
(a partial image, or the image itself at 0) and to the completed image, best and median. The previews are the
model's estimate of its image part way (free to compute), enlarged and encoded as the final image is: that
encoding is their cost. No peer: no other OpenAI-compatible server streams a local model's partial images.

    .venv/bin/python bench/images_partial.py [--rounds 5] [--size 1024x1024]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from serving import free_port, oasis_environment, running

MODEL = {"id": "oasis-shapes-32", "engine": "shapes"}


def _streamed(base: str, partials: int, size: str) -> tuple[float, float, int]:
    """Seconds to the first event and to the completed image, and the partial images sent."""
    body = {"model": MODEL["id"], "prompt": "two blue stars at the top", "size": size, "stream": True}
    body["partial_images"] = partials
    started = time.perf_counter()
    first = None
    sent = 0
    with httpx.stream("POST", f"{base}/v1/images/generations", json=body, timeout=120) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: "):
                continue
            kind = json.loads(line.removeprefix("data: "))["type"]
            first = first if first is not None else time.perf_counter() - started
            sent += kind.endswith("partial_image")
    return first or 0.0, time.perf_counter() - started, sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", default="1024x1024")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    config = folder / "oasis.yaml"
    config.write_text(json.dumps({"defaults": False, "models": [MODEL]}))
    port = free_port()
    command = [sys.executable, "-m", "oasis", "serve", "--port", str(port), "--config", str(config)]
    command += ["--data-dir", str(folder / "data")]
    counts = (0, 1, 3)
    firsts: dict[int, list[float]] = {count: [] for count in counts}
    totals: dict[int, list[float]] = {count: [] for count in counts}
    with running("oasis", command, port, folder / "oasis.log", oasis_environment()) as base:
        _streamed(base, 0, args.size)  # warm
        for _ in range(args.rounds):
            for count in counts:
                first, total, sent = _streamed(base, count, args.size)
                assert sent == count, (count, sent)
                firsts[count].append(first)
                totals[count].append(total)
    print(f"{args.size} PNG, {args.rounds} rounds, seconds")
    print("| partial_images | first event best | first event median | completed best | completed median |")
    print("|---|---|---|---|---|")
    for count in counts:
        print(
            f"| {count} | {min(firsts[count]):.2f} | {statistics.median(firsts[count]):.2f} "
            f"| {min(totals[count]):.2f} | {statistics.median(totals[count]):.2f} |"
        )


if __name__ == "__main__":
    main()
