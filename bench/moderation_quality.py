"""The moderation model's quality on the held-out test split, and its latency, through a real `oasis serve`.

    python bench/moderation_quality.py [--data datasets/moderation/labelled.jsonl] [--requests 50]
                                       [--languages datasets/moderation/multilingual.jsonl]
                                       [--config oasis.yaml --model guard]

Inputs go through POST /v1/moderations (32 per request) exactly as a client sends them, so windows, thresholds and
the sexual/minors rule are those users get. Prints per category precision, recall and F1 on the test split (the
split scripts/train_moderation_head.py never reads), the overall flagged precision and recall, and the p50/p95
latency of one 100-word input; then the flagged precision and recall per language on the other languages' set
(every line of it: the head never sees it, being trained on English only). Targets (issue 16): flagged precision
>= 0.9, flagged recall >= 0.85, no category with recall under 0.6, p50 < 30 ms. No peer: no other
OpenAI-compatible server moderates offline.

`--config` starts the server with a config file of yours and `--model` names the moderation model to measure, for
example an `llm-judge` over a chat model you configured (README, Moderations): the same figures for your judge.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from serving import free_port, oasis_environment, running

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from train_moderation_head import CATEGORIES, DATA, read_examples

LANGUAGES = DATA.parent / "multilingual.jsonl"

HUNDRED_WORDS = (
    "The committee met on Tuesday to review the budget for the new library wing. After a long discussion about "
    "shelving, lighting and the reading room, members agreed to ask three builders for quotes and to hold a public "
    "meeting in the spring. Volunteers offered to sort donated books, and the children's section will get new "
    "furniture. The treasurer noted that the bake sale raised more than expected, which covers the paint. Everyone "
    "thanked the staff for keeping the old building open during the winter storms, and the meeting closed with tea "
    "and a short tour of the site where the work will start in April."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--languages", type=Path, default=LANGUAGES)
    parser.add_argument("--config", type=Path, help="a config file for the server (default: none)")
    parser.add_argument("--model", default="text-moderation-latest", help="the moderation model to measure")
    args = parser.parse_args()
    test = read_examples(args.data)["test"]
    others = [json.loads(line) for line in args.languages.read_text(encoding="utf-8").splitlines() if line.strip()]
    port, folder = free_port(), Path(tempfile.mkdtemp())
    command = [sys.executable, "-m", "oasis", "serve", "--port", str(port), "--data-dir", str(folder / "data")]
    if args.config:
        command += ["--config", str(args.config)]
    with running("oasis", command, port, folder / "oasis.log", oasis_environment()) as base:
        client = httpx.Client(base_url=base, headers={"Authorization": "Bearer sk-bench"}, timeout=120)
        results = _moderate(client, args.model, [example.text for example in test])
        other_results = _moderate(client, args.model, [record["text"] for record in others])
        latencies = []
        for _ in range(args.requests + 3):
            started = time.perf_counter()
            client.post("/v1/moderations", json={"input": HUNDRED_WORDS, "model": args.model}).raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
        latencies = latencies[3:]  # the first requests warm caches

    print(f"\nMachine: {platform.processor() or platform.machine()}; model {args.model}; ", end="")
    print(f"test split: {len(test)} texts of {args.data}\n")
    print("| category | test positives | precision | recall | F1 |")
    print("|---|---|---|---|---|")
    for category in CATEGORIES:
        truth = [category in example.categories for example in test]
        flagged = [result["categories"][category] for result in results]
        print(_row(category, truth, flagged))
    truth = [bool(example.categories) for example in test]
    flagged = [result["flagged"] for result in results]
    print(_row("**flagged (any category)**", truth, flagged))
    print(f"\nOther languages ({args.languages.name}, every line; the shipped head is trained on English):\n")
    print("| language | texts | harmful | flagged precision | flagged recall |\n|---|---|---|---|---|")
    for language in sorted({record["language"] for record in others}):
        chosen = [(r, o) for r, o in zip(others, other_results, strict=True) if r["language"] == language]
        truth, flagged = [bool(r["categories"]) for r, _ in chosen], [o["flagged"] for _, o in chosen]
        print(_language_row(language, truth, flagged))
    truth, flagged = [bool(r["categories"]) for r in others], [o["flagged"] for o in other_results]
    print(_language_row("all", truth, flagged))
    ordered = sorted(latencies)
    print(
        f"\nOne 100-word input: p50 {statistics.median(latencies):.1f} ms, "
        f"p95 {ordered[int(len(ordered) * 0.95) - 1]:.1f} ms over {len(latencies)} requests"
    )


def _moderate(client: httpx.Client, model: str, texts: list[str]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for start in range(0, len(texts), 32):
        response = client.post("/v1/moderations", json={"input": texts[start : start + 32], "model": model})
        response.raise_for_status()
        results.extend(response.json()["results"])
    return results


def _language_row(name: str, truth: list[bool], flagged: list[bool]) -> str:
    precision, recall = _precision_recall(truth, flagged)
    return f"| {name} | {len(truth)} | {sum(truth)} | {precision:.2f} | {recall:.2f} |"


def _precision_recall(truth: list[bool], flagged: list[bool]) -> tuple[float, float]:
    true_positives = sum(t and f for t, f in zip(truth, flagged, strict=True))
    return true_positives / max(sum(flagged), 1), true_positives / max(sum(truth), 1)


def _row(name: str, truth: list[bool], flagged: list[bool]) -> str:
    positives = sum(truth)
    if not positives:
        return f"| {name} | 0 | - | - | - ({sum(flagged)} flagged) |"
    precision, recall = _precision_recall(truth, flagged)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    hits = sum(t and f for t, f in zip(truth, flagged, strict=True))
    # the counts too: a precision printed as 0.90 may be 0.897
    counts = f"{precision:.3f} ({hits}/{sum(flagged)}) | {recall:.3f} ({hits}/{positives})"
    return f"| {name} | {positives} | {counts} | {f1:.2f} |"


if __name__ == "__main__":
    main()
