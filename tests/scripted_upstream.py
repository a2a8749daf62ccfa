"""An OpenAI-compatible chat model upstream that answers with a scripted stream: for tests of what oasis makes of
a model's text and tool calls as they arrive."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from oasis.services.chat.assembly import assembled
from tests.conftest import Harness


class ScriptedChat(http.server.BaseHTTPRequestHandler):
    """Answers each chat completion with `script(body)`'s deltas, streamed, then its finish reason and usage (or,
    to a request that does not stream, the same answer whole)."""

    usage: dict[str, int] | None = None  # a last chunk with the usage, when set
    received: list[dict[str, Any]] | None = None  # a subclass's own list: the bodies it was sent, in order

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        raise NotImplementedError

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.received is not None:
            self.received.append(body)
        deltas, finish = self.script(body)
        chunks = [{"index": 0, "delta": delta, "finish_reason": None} for delta in deltas]
        chunks.append({"index": 0, "delta": {}, "finish_reason": finish})
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "theirs"}
        events = [{**base, "choices": [choice]} for choice in chunks]
        if not body.get("stream"):  # the same answer whole
            whole = json.dumps({**assembled(events), "usage": self.usage}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(whole)))
            self.end_headers()
            self.wfile.write(whole)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        if self.usage is not None:
            events.append({**base, "choices": [], "usage": self.usage})
        for event in events:
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.asynccontextmanager
async def upstream_oasis(
    start_oasis: Callable[..., Any],
    handler: type[http.server.BaseHTTPRequestHandler],
    *also: Any,
    aliases: tuple[str, ...] = (),
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """A server whose model `remote` (also named by `aliases`) is `handler` served on loopback as an
    OpenAI-compatible upstream (and whose other models are `also`'s; `overrides`: more settings)."""
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    try:
        remote = {"base_url": f"http://127.0.0.1:{upstream.server_address[1]}/v1", "model": "theirs"}
        harness: Harness = await start_oasis(
            engine_factories=None,
            models=[{"id": "remote", "engine": "upstream", "aliases": list(aliases), "options": remote}, *also],
            **overrides,
        )
        yield harness
    finally:
        upstream.shutdown()
        upstream.server_close()
