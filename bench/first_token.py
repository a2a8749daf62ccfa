"""Where a request's first token spends its time, from the client's send to the first chunk it reads.

    python bench/first_token.py [--gguf PATH] [--requests 20] [--busy 0,4] [--threads N]

Starts `oasis serve` (one llama.cpp model, `--busy` + 1 slots) with probes in its process, and sends requests one
after another through /v1/completions, streamed (`max_tokens` 16, the time to its first text chunk) and not
(`max_tokens` 1, the time to the whole answer), taking turns; with `--busy N`, N long streams decode meanwhile.
The server's probes stamp each request (all on CLOCK_MONOTONIC, which the client's perf_counter reads too): when
the app is called, when its handler begins (FastAPI has parsed and checked the body, the key is checked), when the
request is checked and tokenized, when it reaches the engine's queue, the decode its first token comes from (start and
end), when the engine puts the first token in its outbox,
when the outbox is handed to the event loop, when the loop delivers it to the request, and when the first body
chunk with text goes to uvicorn. The table gives the median of each stretch in milliseconds. On the GPU (H200),
streamed time to first token was ~2 ms above llama-server's while max_tokens=1 was not (bench/RESULTS.md): this
shows which stretch holds it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from chat_vs_llama_server import PROMPT, default_gguf
from serving import free_port, oasis_environment, running_process

PROBED_STREAM_TOKENS = 16  # the streamed probe's max_tokens: tells its sequence from the busy ones
BUSY_TOKENS = 100_000
TEXT = re.compile(rb'"text": ?"[^"]')  # a chunk (or answer) that carries text


def install_probes(out: Path) -> None:
    """In the server's process: wraps the app, the engine's outbox and llama_decode; writes the stamps to `out`
    once the server has stopped."""
    from oasis import http_server
    from oasis.engines.llamacpp import engine as engine_module
    from oasis.engines.llamacpp import native
    from oasis.services.chat import completions as completions_module

    events: list[tuple[str, float, Any]] = []
    clock = time.perf_counter
    probed = (1, PROBED_STREAM_TOKENS)

    lib = native.lib()
    decode = lib.llama_decode

    def timed_decode(context: Any, batch: Any) -> int:
        start = clock()
        status = decode(context, batch)
        events.append(("decode", start, clock()))
        return int(status)

    lib.llama_decode = timed_decode

    firsts: dict[int, Any] = {}  # sequences whose first token was seen, kept alive so that no id is reused
    put = engine_module._Outbox.put

    def probed_put(self: Any, sequence: Any, item: Any) -> None:
        if sequence.params.max_tokens in probed and id(sequence) not in firsts:
            firsts[id(sequence)] = sequence
            events.append(("put", clock(), id(sequence)))
        put(self, sequence, item)

    engine_module._Outbox.put = probed_put  # type: ignore[method-assign]
    flush = engine_module._Outbox.flush

    def probed_flush(self: Any) -> None:
        carried = [id(sequence) for sequence, _ in self._items if sequence.params.max_tokens in probed]
        flush(self)
        if carried:
            events.append(("flush", clock(), carried))

    engine_module._Outbox.flush = probed_flush  # type: ignore[method-assign]
    deliver = engine_module._deliver

    def probed_deliver(items: list[tuple[Any, Any]]) -> None:
        carried = [id(sequence) for sequence, _ in items if sequence.params.max_tokens in probed]
        if carried:
            events.append(("deliver", clock(), carried))
        deliver(items)

    engine_module._deliver = probed_deliver
    enqueue = engine_module.LlamaCppEngine._enqueue

    def probed_enqueue(self: Any, prompt: list[int], params: Any, scoring: bool) -> Any:
        sequence = enqueue(self, prompt, params, scoring)
        if params.max_tokens in probed:
            events.append(("queued", clock(), None))
        return sequence

    engine_module.LlamaCppEngine._enqueue = probed_enqueue  # type: ignore[method-assign]
    prepared = completions_module.CompletionService.prepared

    async def probed_prepared(self: Any, request: Any) -> Any:
        if request.max_tokens in probed:
            events.append(("handler", clock(), None))
        job = await prepared(self, request)
        if request.max_tokens in probed:
            events.append(("prepared", clock(), None))
        return job

    completions_module.CompletionService.prepared = probed_prepared  # type: ignore[method-assign]
    serve = http_server.serve

    def probed_app(app: Any) -> Any:
        async def wrapped(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"] != "/v1/completions":
                return await app(scope, receive, send)
            events.append(("app", clock(), None))
            written = False

            async def probed_send(message: Any) -> None:
                nonlocal written
                if not written and message["type"] == "http.response.body" and TEXT.search(message["body"]):
                    written = True
                    events.append(("write", clock(), None))
                await send(message)

            await app(scope, receive, probed_send)

        return wrapped

    def probed_serve(app: Any, **kwargs: Any) -> int:
        status = serve(probed_app(app), **kwargs)
        out.write_text(json.dumps(events))  # the process may end without running atexit's functions
        return status

    http_server.serve = probed_serve


async def _probe(client: httpx.AsyncClient, base: str, streamed: bool, seed: int) -> tuple[float, float]:
    """(sent, first text read) on perf_counter."""
    body = {
        "model": "bench", "prompt": PROMPT, "temperature": 0.8, "seed": seed, "ignore_eos": True,
        "max_tokens": PROBED_STREAM_TOKENS if streamed else 1, "stream": streamed,
    }  # fmt: skip
    sent = time.perf_counter()
    if not streamed:
        (await client.post(f"{base}/v1/completions", json=body)).raise_for_status()
        return sent, time.perf_counter()
    first = None
    async with client.stream("POST", f"{base}/v1/completions", json=body) as response:
        async for line in response.aiter_lines():  # to its end, as a client reads
            if first is None and line.startswith("data: {") and json.loads(line[6:])["choices"][0].get("text"):
                first = time.perf_counter()
    if first is None:
        raise RuntimeError("the stream brought no text")
    return sent, first


async def _client(base: str, requests: int, busy: int) -> list[tuple[bool, float, float]]:
    async with httpx.AsyncClient(timeout=600) as client:
        long_body = {
            "model": "bench", "prompt": PROMPT, "max_tokens": BUSY_TOKENS, "temperature": 0.8, "ignore_eos": True,
            "stream": True,
        }  # fmt: skip

        async def busy_stream() -> None:
            async with client.stream("POST", f"{base}/v1/completions", json=long_body) as response:
                async for _ in response.aiter_lines():
                    pass

        background = [asyncio.create_task(busy_stream()) for _ in range(busy)]
        await asyncio.sleep(1.0 if busy else 0.0)
        done = []
        for number in range(2 * requests + 2):
            streamed = number % 2 == 0
            sent, first = await _probe(client, base, streamed, seed=number)
            if number >= 2:  # the first of each kind warms up
                done.append((streamed, sent, first))
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        return done


def _stretches(events: list[list[Any]], sent: float, first: float) -> dict[str, float]:
    """The stretches of one request, in ms, from the stamps between its send and its first text."""
    mine = [event for event in events if sent <= event[1] <= first]
    app = next(event[1] for event in mine if event[0] == "app")
    queued = next(event[1] for event in mine if event[0] == "queued")
    handler = next(event[1] for event in mine if event[0] == "handler")
    prepared = next(event[1] for event in mine if event[0] == "prepared")
    put = next(event for event in mine if event[0] == "put")
    decode = [event for event in mine if event[0] == "decode" and event[2] <= put[1]][-1]  # the one it came from
    sequence = put[2]
    flush = next(event[1] for event in mine if event[0] == "flush" and sequence in event[2])
    deliver = next(event[1] for event in mine if event[0] == "deliver" and sequence in event[2])
    write = next(event[1] for event in mine if event[0] == "write")
    return {
        "to the app": app - sent,
        "app to the route's handler": handler - app,
        "checked and tokenized": prepared - handler,
        "to the engine's queue": queued - prepared,
        "queue to its decode": decode[1] - queued,
        "that decode": decode[2] - decode[1],
        "decode end to token put": put[1] - decode[2],
        "put to flush": flush - put[1],
        "flush to delivered": deliver - flush,
        "delivered to written": write - deliver,
        "written to read": first - write,
        "total": first - sent,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", default=None)
    parser.add_argument("--requests", type=int, default=20, help="of each kind")
    parser.add_argument("--busy", default="0,4", help="long streams decoding meanwhile, one run each")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--probed-serve", nargs=2, metavar=("EVENTS", "ARGS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probed_serve:  # the server's process
        install_probes(Path(args.probed_serve[0]))
        from oasis.cli import main as oasis_main

        raise SystemExit(oasis_main(json.loads(args.probed_serve[1])))
    gguf = args.gguf or str(default_gguf())
    for busy in [int(level) for level in args.busy.split(",")]:
        folder = Path(tempfile.mkdtemp())
        options: dict[str, Any] = {"parallel": busy + 1, "context_length": 1024}
        if args.threads:
            options["threads"] = args.threads
        config = folder / "oasis.yaml"
        model = {"id": "bench", "engine": "llamacpp", "path": gguf, "options": options}
        config.write_text(json.dumps({"defaults": False, "models": [model]}))
        port = free_port()
        serve_args = ["serve", "--port", str(port), "--config", str(config), "--data-dir", str(folder / "data")]
        events_file = folder / "events.json"
        command = [sys.executable, __file__, "--probed-serve", str(events_file), json.dumps(serve_args)]
        with running_process("oasis", command, port, folder / "oasis.log", oasis_environment()) as (base, process):
            done = asyncio.run(_client(base, args.requests, busy))
            # uvicorn raises the signal that stopped it again once it has shut down: SIGTERM's would end the
            # process before the stamps are written, Ctrl-C's is caught
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        events = json.loads(events_file.read_text())
        print(f"\n{busy} busy streams; {args.requests} requests of each kind; medians in ms")
        table: dict[str, dict[str, float]] = {}
        for kind, streamed in (("streamed, to first text", True), ("max_tokens 1, to the answer", False)):
            rows = [_stretches(events, sent, first) for is_streamed, sent, first in done if is_streamed == streamed]
            table[kind] = {name: statistics.median(row[name] for row in rows) * 1e3 for name in rows[0]}
        print("| stretch | " + " | ".join(table) + " |")
        print("|---|" + "---|" * len(table))
        for name in next(iter(table.values())):
            print(f"| {name} | " + " | ".join(f"{column[name]:.2f}" for column in table.values()) + " |")


if __name__ == "__main__":
    main()
