"""Models routed to another OpenAI-compatible server (here a second `oasis serve` on loopback)."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import openai
import pytest
import yaml

from oasis.engines.upstream import Replica, UpstreamEngine, pick_replica
from tests.api.test_images import SHAPES, pixels_of, png, scene
from tests.conftest import Harness, smollm
from tests.server_process import ServerProcess, free_port, oasis_env, oasis_server

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("upstream")
    config = folder / "oasis.yaml"
    config.write_text(yaml.safe_dump({"defaults": False, "models": [smollm(), SHAPES]}))
    with oasis_server(folder / "data", oasis_env(None), "--config", str(config)) as server:
        yield server


@pytest.fixture
async def routed(start_oasis: Callable[..., Any], upstream: ServerProcess) -> Harness:
    url = f"{upstream.base_url}/v1"
    harness: Harness = await start_oasis(
        engine_factories=None,
        models=[
            {
                "id": "remote",
                "engine": "upstream",
                "aliases": ["gpt-4o"],
                "options": {"base_urls": [url, url], "model": "smollm2-135m-instruct"},
            },
            {"id": "remote-painter", "engine": "upstream", "options": {"base_url": url, "model": "oasis-shapes-32"}},
            {"id": "remote-missing", "engine": "upstream", "options": {"base_url": url, "model": "nope"}},
            {"id": "down", "engine": "upstream", "options": {"base_url": f"http://127.0.0.1:{free_port()}/v1"}},
            {
                "id": "all-down",
                "engine": "upstream",
                "options": {"base_urls": [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"]},
            },
            {
                "id": "half-down",
                "engine": "upstream",
                "options": {"base_urls": [f"http://127.0.0.1:{free_port()}/v1", url], "model": "smollm2-135m-instruct"},
            },
        ],
    )
    return harness


async def test_chat_is_answered_upstream(routed: Harness) -> None:
    client = routed.sdk()
    whole = await client.chat.completions.create(model="gpt-4o", messages=CAPITAL, temperature=0, max_tokens=12)
    assert whole.model == "gpt-4o" and whole.choices[0].message.content
    assert whole.usage and whole.usage.completion_tokens == 12
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=CAPITAL,
        temperature=0,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens == 12


async def test_completions_are_answered_upstream(routed: Harness) -> None:
    reply = await routed.sdk().completions.create(
        model="remote", prompt="The capital of France is", temperature=0, max_tokens=3, logprobs=1
    )
    assert reply.choices[0].text and reply.choices[0].logprobs and reply.choices[0].logprobs.tokens


async def test_upstream_errors_keep_their_status_and_envelope(routed: Harness) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await routed.sdk().chat.completions.create(model="remote-missing", messages=CAPITAL, max_tokens=3)
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        await routed.sdk().chat.completions.create(model="remote-missing", messages=CAPITAL, stream=True)


async def test_an_unreachable_upstream_is_a_502(routed: Harness) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await routed.sdk().chat.completions.create(model="down", messages=CAPITAL, max_tokens=3)
    assert caught.value.status_code == 502 and "did not answer" in caught.value.message
    assert "127.0.0.1" not in caught.value.message  # the upstream's address is the operator's, not the client's
    # Every replica refusing: each is tried once, then a 502 (again while they are passed over).
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            await asyncio.wait_for(
                routed.sdk().chat.completions.create(model="all-down", messages=CAPITAL, max_tokens=3), timeout=30
            )
        assert caught.value.status_code == 502


async def test_a_replica_that_refuses_connections_does_not_take_the_traffic(routed: Harness) -> None:
    """It fails at once, so by requests in flight it looks the least busy: it is passed over for a while, and a
    request it refused goes to another replica (nothing was sent)."""
    client = routed.sdk()
    for stream in (False, True, False, True):
        if stream:
            chunks = await client.chat.completions.create(
                model="half-down", messages=CAPITAL, max_tokens=3, stream=True
            )
            assert [chunk async for chunk in chunks]
        else:
            reply = await client.chat.completions.create(model="half-down", messages=CAPITAL, max_tokens=3)
            assert reply.choices[0].message.content is not None
    engine = routed.container.registry.engine("half-down")
    assert isinstance(engine, UpstreamEngine) and engine.replicas[0].down_until > 0


def test_an_upstream_stream_error_may_be_bare_text() -> None:
    from oasis.engines.upstream import _stream_error

    assert _stream_error("Model is overloaded").message == "Model is overloaded"
    assert _stream_error({"message": "bad", "type": "invalid_request_error"}).type == "invalid_request_error"


async def test_requests_spread_over_replicas_by_outstanding_count(routed: Harness) -> None:
    engine = routed.container.registry.engine("remote")
    assert isinstance(engine, UpstreamEngine)
    client = routed.sdk()
    seen: set[tuple[int, ...]] = set()

    async def watch() -> None:
        while True:
            seen.add(tuple(replica.outstanding for replica in engine.replicas))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    await asyncio.gather(
        *(client.chat.completions.create(model="remote", messages=CAPITAL, max_tokens=40) for _ in range(2))
    )
    watcher.cancel()
    assert (1, 1) in seen and (2, 0) not in seen and (0, 2) not in seen
    assert [replica.outstanding for replica in engine.replicas] == [0, 0]


def test_pick_replica_prefers_the_least_busy() -> None:
    replicas = [Replica("a", outstanding=3), Replica("b", outstanding=1), Replica("c", outstanding=1)]
    assert pick_replica(replicas).base_url == "b"


async def test_images_are_made_upstream_and_linked_here(routed: Harness) -> None:
    client = routed.sdk()
    linked = await client.images.generate(model="remote-painter", prompt="a red circle", n=2, size="256x256")
    assert len(linked.data) == 2
    async with routed.http(api_key=None) as browser:
        for item in linked.data:
            assert (item.url or "").startswith(routed.base_url + "/v1/images/files/")  # kept here, not upstream
            assert pixels_of((await browser.get(item.url or "")).content).shape == (256, 256, 3)

    source = scene()
    mask = np.full((256, 256, 4), 255, dtype=np.uint8)
    mask[:, 128:, 3] = 0
    edited = await client.images.edit(
        model="remote-painter",
        image=("scene.png", png(source), "image/png"),
        mask=("mask.png", png(mask), "image/png"),
        prompt="a green star",
        size="256x256",
        response_format="b64_json",
    )
    assert np.array_equal(pixels_of(base64.b64decode(edited.data[0].b64_json or ""))[:, :128], source[:, :128])
    varied = await client.images.create_variation(
        model="remote-painter", image=("scene.png", png(source), "image/png"), size="256x256", n=2
    )
    assert len(varied.data) == 2

    with pytest.raises(openai.BadRequestError) as caught:  # checked here, before anything is forwarded
        await client.images.edit(
            model="remote-painter",
            image=("scene.png", png(source), "image/png"),
            mask=("mask.png", png(mask[:128, :128]), "image/png"),  # not the image's size
            prompt="x",
            size="256x256",
        )
    assert caught.value.body["param"] == "mask"  # type: ignore[index]

    # the GPT image models' fields go upstream as the client sent them; a whole-image edit needs no mask there
    whole = await client.images.edit(
        model="remote-painter",
        image=("scene.png", png(source), "image/png"),
        prompt="a green star",
        size="256x256",
        response_format="b64_json",
        extra_body={"output_format": "jpeg"},  # a keyword only in newer SDKs
    )
    assert base64.b64decode(whole.data[0].b64_json or "").startswith(b"\xff\xd8\xff")
    # several images go upstream as `image[]` (as newer SDKs send a list): this upstream (oasis, with a local
    # model) edits one, and says so
    async with routed.http() as http:
        several = await http.post(
            "/v1/images/edits",
            data={"model": "remote-painter", "prompt": "the two together", "size": "256x256"},
            files=[("image[]", ("a.png", png(source), "image/png")), ("image[]", ("b.png", png(source), "image/png"))],
        )
    assert several.status_code == 400 and "edit one image" in several.json()["error"]["message"], several.text
    assert several.json()["error"]["param"] == "image"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible server that records each body it is sent and answers a fixed chat completion: what
    oasis forwards is what this test reads."""

    bodies: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        self.bodies.append(json.loads(self.rfile.read(length)))
        data = json.dumps(self.answer()).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def answer(self) -> dict[str, Any]:
        return {
            "id": "chatcmpl-recorded",
            "object": "chat.completion",
            "created": 0,
            "model": "recorded",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_a_forwarded_request_keeps_what_the_client_sent_at_every_depth(start_oasis: Callable[..., Any]) -> None:
    """Fields this server's types do not know, inside the request too (a tool's `strict`, a stream option, an image
    part's URL as written), reach the upstream as the client sent them: they were dropped, and strict function
    calling through vLLM or OpenAI lost its guarantee without a word."""
    recorder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    try:
        base_url = f"http://127.0.0.1:{recorder.server_address[1]}/v1"
        harness: Harness = await start_oasis(
            engine_factories=None,
            models=[{"id": "remote", "engine": "upstream", "options": {"base_url": base_url, "model": "theirs"}}],
        )
        sent = {
            "model": "remote",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com"}}]},
                # a part this server's text models refuse, for a model upstream to read
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}],
                },
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "call_1", "type": "custom", "custom": {"name": "g", "input": "abc"}}],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "done"},
            ],
            "tools": [
                {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}},
                # a custom tool in a grammar local models do not take (lark), and a call to one in the history
                {
                    "type": "custom",
                    "custom": {
                        "name": "g",
                        "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": "start: /[a-z]+/"}},
                    },
                },
            ],
            "tool_choice": {"type": "custom", "custom": {"name": "g"}},
            "top_k": 5,
            # values this server's own models refuse, which an upstream may know (OpenAI adds efforts often)
            "reasoning_effort": "ultra",
            "modalities": ["text", "image"],
        }
        async with harness.http() as client:
            reply = await client.post("/v1/chat/completions", json=sent)
        assert reply.status_code == 200 and reply.json()["model"] == "remote", reply.text
        (forwarded,) = _Recorder.bodies
        assert forwarded == {**sent, "model": "theirs"}
    finally:
        recorder.shutdown()
        recorder.server_close()


class _ImageRecorder(_Recorder):
    """Answers every request as a GPT image model does: base64 images and the settings it drew with."""

    bodies: list[dict[str, Any]] = []
    usage = {"input_tokens": 7, "input_tokens_details": {"image_tokens": 0, "text_tokens": 7}, "output_tokens": 272}

    def answer(self) -> dict[str, Any]:
        picture = base64.b64encode(png(scene())).decode()
        return {
            "created": 0,
            "data": [{"b64_json": picture}],
            "background": "transparent",
            "output_format": "png",
            "quality": "low",
            "size": "1024x1536",
            "usage": {**self.usage, "total_tokens": 279},
        }


async def test_a_gpt_image_model_upstream_gets_the_request_as_sent_and_its_answer_is_relayed(
    start_oasis: Callable[..., Any],
) -> None:
    """What only this server's engines cannot do (a transparent background, `auto` size) is the upstream's to do;
    it is asked once, whole, without `response_format` (which the GPT image models refuse), and its own account
    of what it drew reaches the client, streamed or not."""
    recorder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageRecorder)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    try:
        base_url = f"http://127.0.0.1:{recorder.server_address[1]}/v1"
        upstream = {"base_url": base_url, "model": "gpt-image-1"}
        harness: Harness = await start_oasis(
            engine_factories=None,
            models=[{"id": "remote", "engine": "upstream", "aliases": ["gpt-image-1"], "options": upstream}],
        )
        asked = {"prompt": "a red square", "background": "transparent", "size": "auto", "quality": "low"}
        async with harness.http() as client:
            whole = await client.post(
                "/v1/images/generations", json={**asked, "model": "gpt-image-1", "response_format": "b64_json"}
            )
            streamed = await client.post(
                "/v1/images/generations",
                json={**asked, "model": "gpt-image-1", "stream": True, "partial_images": 2},
            )
            # no model named, but a field only the GPT image models take: OpenAI's default is then gpt-image-1
            unnamed = await client.post("/v1/images/generations", json=asked)
        assert whole.status_code == streamed.status_code == unnamed.status_code == 200, (whole.text, streamed.text)
        assert _ImageRecorder.bodies == [{**asked, "model": "gpt-image-1"}] * 3
        answer = whole.json()
        assert pixels_of(base64.b64decode(answer["data"][0]["b64_json"])).shape == (256, 256, 3)
        assert (answer["background"], answer["quality"], answer["size"]) == ("transparent", "low", "1024x1536")
        assert answer["usage"]["total_tokens"] == 279
        frames = [line for line in streamed.text.splitlines() if line]
        assert frames[0] == "event: image_generation.completed" and len(frames) == 2
        event = json.loads(frames[1].removeprefix("data: "))
        assert (event["type"], event["background"], event["usage"]["output_tokens"]) == (
            "image_generation.completed",
            "transparent",
            272,
        )
        assert event["b64_json"] == answer["data"][0]["b64_json"]
    finally:
        recorder.shutdown()
        recorder.server_close()
