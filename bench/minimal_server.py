"""oasis's llama.cpp engine behind a minimal Python HTTP server, for `chat_vs_llama_server.py --alternate --control`.

    python bench/minimal_server.py GGUF PORT OPTIONS_JSON

One ASGI function on uvicorn, started as `oasis serve` starts it (oasis/http_server.py): `GET /health`, and streamed
`POST /v1/completions` with the fields the benchmark sends (prompt, max_tokens, temperature, seed), one SSE frame
and one send a token. No FastAPI, Starlette, middleware, services or database: a baseline for what this design of
server costs a streamed token more than llama-server, against which oasis's own request path is measured.
"""

from __future__ import annotations

import codecs
import json
import sys
import time
import uuid
from typing import Any

from oasis.engines.llamacpp.engine import LlamaCppEngine
from oasis.engines.text import SamplingParams
from oasis.http_server import serve
from oasis.settings import ModelSpec

_encode = json.JSONEncoder(separators=(",", ":")).encode


class MinimalServer:
    def __init__(self, gguf: str, options: dict[str, Any]) -> None:
        self.engine = LlamaCppEngine(ModelSpec(id="bench", engine="llamacpp", path=gguf, options=options))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await self.engine.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.engine.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/health":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        if scope["path"] != "/v1/completions":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        await self._stream(request, send)

    async def _stream(self, request: dict[str, Any], send: Any) -> None:
        prompt = self.engine.tokenize(request["prompt"], add_special=True, parse_special=False)
        params = SamplingParams(
            max_tokens=request["max_tokens"],
            temperature=request.get("temperature", 1.0),
            seed=request.get("seed"),
            ignore_eos=True,
        )
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        envelope = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": "bench",
        }
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        tokens = self.engine.generate(prompt, params)
        try:
            async for sampled in tokens:
                text = decoder.decode(sampled.piece, final=sampled.finish_reason is not None)
                choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": sampled.finish_reason}
                frame = b"data: " + _encode({**envelope, "choices": [choice]}).encode() + b"\n\n"
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        finally:
            await tokens.aclose()  # frees the engine's slot if a send fails
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


if __name__ == "__main__":
    gguf, port, options = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
    sys.exit(serve(MinimalServer(gguf, options), host="127.0.0.1", port=port))
