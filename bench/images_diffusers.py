"""oasis's diffusers engine against diffusers called directly on the same pipeline folder and settings (issue 17's
target: oasis's time per image at least 0.95x of diffusers' own, i.e. a ratio of >= 0.95 below).

    python bench/images_diffusers.py [--pipeline FOLDER] [--channels 96] [--steps 20] [--rounds 3] [--sizes 256]

Without `--pipeline` it builds a Stable-Diffusion-shaped pipeline from configs (random weights: the same work per
step as trained weights of that shape) with `--channels` U-Net channels. oasis runs as `oasis serve` and is timed
from the client (`POST /v1/images/generations`, `b64_json`, the whole answer); diffusers runs in this process
(`pipeline(...)` with the same prompt, size, steps and guidance, PIL images out). The sides take turns, round
by round, and each keeps its best and median round. Needs torch and diffusers (`pip install 'oasis[diffusers]'`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.server_process import oasis_env, oasis_server

PROMPT = "a red circle on the left"
GUIDANCE = 7.5


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pipeline", type=Path, help="a diffusers pipeline folder (default: build one)")
    parser.add_argument("--channels", type=int, default=96, help="U-Net channels of the built pipeline")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="256", help="square sides, comma-separated")
    args = parser.parse_args()

    import torch
    from diffusers import AutoPipelineForText2Image

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        path = args.pipeline
        if path is None:
            from tests.images_torch.tiny_pipeline import build_tiny_pipeline

            path = build_tiny_pipeline(folder / "built", width=args.channels)
        config = folder / "oasis.yaml"
        options = {"steps": args.steps, "guidance": GUIDANCE, "device": "cpu", "threads": args.threads}
        model = {"id": "sd", "engine": "diffusers", "path": str(path), "options": options}
        config.write_text(yaml.safe_dump({"defaults": False, "models": [model]}))
        direct = AutoPipelineForText2Image.from_pretrained(path, local_files_only=True)
        direct.safety_checker = None
        direct.set_progress_bar_config(disable=True)
        print(f"pipeline: {path}; {args.steps} steps, guidance {GUIDANCE}, {args.threads} torch threads")
        print("\n| size | oasis best s | diffusers best s | ratio of bests | ratio of medians |\n|---|---|---|---|---|")
        with oasis_server(folder / "data", oasis_env(None), "--config", str(config), ready_timeout=300) as server:
            client = httpx.Client(base_url=f"{server.base_url}/v1", timeout=600)
            for size in (int(side) for side in args.sizes.split(",")):
                body = {"model": "sd", "prompt": PROMPT, "size": f"{size}x{size}", "response_format": "b64_json"}
                ours, theirs = [], []
                for round_index in range(args.rounds + 1):  # the first round of each side warms it and is dropped
                    started = time.perf_counter()
                    response = client.post("/images/generations", json=body)
                    response.raise_for_status()
                    oasis_seconds = time.perf_counter() - started
                    started = time.perf_counter()
                    generator = torch.Generator("cpu").manual_seed(round_index)
                    direct(
                        prompt=PROMPT,
                        width=size,
                        height=size,
                        num_inference_steps=args.steps,
                        guidance_scale=GUIDANCE,
                        generator=generator,
                    )
                    direct_seconds = time.perf_counter() - started
                    if round_index:
                        ours.append(oasis_seconds)
                        theirs.append(direct_seconds)
                best = min(theirs) / min(ours)
                median = statistics.median(theirs) / statistics.median(ours)
                print(
                    f"| {size}x{size} | {min(ours):.2f} | {min(theirs):.2f} | {best:.3f} | {median:.3f} |", flush=True
                )


if __name__ == "__main__":
    main()
