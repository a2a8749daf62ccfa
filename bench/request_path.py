"""Oasis's own Python on a request's way in and out, in one process: no socket, no model.

    python bench/request_path.py [--requests 3000] [--profile]

Calls the app as uvicorn would (an ASGI scope, the body in one message) with the services' generation replaced by
a probe, and times, for each inference endpoint: from the app's call to the service (middleware, key check,
FastAPI's route lookup, body parsing and validation) and, streamed, from the service's first event to the first
body chunk handed to the server. Medians of `--requests` calls after a warm-up; `--profile` adds a cProfile of the
chat path. The numbers are warm-cache ones: in `oasis serve` the same code runs after a decode has flushed the
caches and takes several times as long (bench/first_token.py measures that), but what this path executes is the
lever either way.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from oasis.app import create_app
from oasis.errors import invalid_request
from oasis.settings import load_settings

BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Tell me a story about the sea."}],
        "stream": True,
        "max_tokens": 16,
        "temperature": 0.8,
    },
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "Once upon a time", "stream": True},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "a line to embed"},
}
CHUNK = {
    "id": "chatcmpl-probe",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "probe",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Once"}, "finish_reason": None}],
}


def _scope(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", b"Bearer sk-bench"),
        ],
    }


async def _measure(requests: int, profile: bool) -> None:
    folder = Path(tempfile.mkdtemp())
    app = create_app(load_settings(None, data_dir=folder / "data", models=[], defaults=False))
    stamps: dict[str, float] = {}

    async def reached(*args: Any, **kwargs: Any) -> None:
        stamps["service"] = time.perf_counter()

    async def refused(*args: Any, **kwargs: Any) -> None:  # embeddings: the stamp, then a 400 ends the request
        stamps["service"] = time.perf_counter()
        raise invalid_request("probe")

    async def events() -> AsyncIterator[dict[str, Any]]:
        stamps["event"] = time.perf_counter()
        yield CHUNK

    async with app.router.lifespan_context(app):
        container = app.state.container
        container.chat.prepared = reached
        container.chat.stream = lambda body, prepared: events()
        container.completions.prepared = reached
        container.completions.stream = lambda body, prepared: events()
        container.embeddings.create = refused
        for path, payload in BODIES.items():
            await _one_path(app, path, payload, stamps, requests, profile)


async def _one_path(
    app: Any, path: str, payload: dict[str, Any], stamps: dict[str, float], requests: int, profile: bool
) -> None:
    body = json.dumps(payload).encode()
    scope = _scope(path, body)
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client stays: what Starlette listens for beside a stream
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and "chunk" not in stamps:
            stamps["chunk"] = time.perf_counter()

    async def once() -> tuple[float, float | None]:
        nonlocal delivered
        delivered = False
        stamps.clear()
        called = time.perf_counter()
        await app(dict(scope, state={}), receive, send)
        out = stamps["chunk"] - stamps["event"] if "event" in stamps else None
        return stamps["service"] - called, out

    for _ in range(200):
        await once()
    rows = [await once() for _ in range(requests)]
    inward = statistics.median(row[0] for row in rows) * 1e6
    outs = [row[1] for row in rows if row[1] is not None]
    outward = f"{statistics.median(outs) * 1e6:.0f}" if outs else "-"
    print(f"| {path} | {inward:.0f} | {outward} |")
    if profile and path == "/v1/chat/completions":
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            await once()
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print("| endpoint | app's call to the service, us (median) | first event to first body chunk, us |")
    print("|---|---|---|")
    asyncio.run(_measure(args.requests, args.profile))


if __name__ == "__main__":
    main()
