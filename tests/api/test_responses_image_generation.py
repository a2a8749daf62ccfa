"""The built-in image_generation tool of the Responses API, through the official SDK: a scripted OpenAI-compatible
model upstream calls it, the shipped shapes model draws the image, and the response holds it as an
`image_generation_call` item (the image in base64) before the model's answer. Bad tools are refused by name."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from tests.api.test_images import SHAPES, pixels_of, png, scene
from tests.api.test_responses import _newer_sdk, hosted_tool_agent
from tests.conftest import Harness
from tests.scripted_upstream import ScriptedChat, upstream_oasis
from tests.server_process import free_port

DRAW: Any = {"type": "image_generation"}


class _Drawer(ScriptedChat):
    """A model upstream that asks for a picture (its arguments in pieces), and once shown it, says so."""

    received: list[dict[str, Any]] | None = []
    usage = {"prompt_tokens": 30, "completion_tokens": 8, "total_tokens": 38}

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if body["messages"][-1]["role"] == "tool":
            return [{"role": "assistant", "content": "Here is your picture."}], "stop"
        arguments = json.dumps({"prompt": "a red circle on a white background"})
        opening = {"index": 0, "id": "call_0", "type": "function"}
        return [
            {"role": "assistant"},
            {"tool_calls": [{**opening, "function": {"name": "image_generation", "arguments": arguments[:12]}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": arguments[12:]}}]},
        ], "tool_calls"


@pytest.fixture
async def drawer_oasis(start_oasis: Callable[..., Any]) -> AsyncIterator[Harness]:
    _Drawer.received = []
    async with upstream_oasis(start_oasis, _Drawer, SHAPES) as harness:
        yield harness


async def test_the_model_draws_an_image_and_the_response_holds_it(drawer_oasis: Harness) -> None:
    from PIL import Image

    client = drawer_oasis.sdk()
    _newer_sdk(client)
    async with client.responses.stream(
        model="remote",
        input="Draw me a red circle.",
        tools=[{"type": "image_generation", "size": "1024x1024", "output_format": "jpeg", "quality": "low"}],
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    call, message = final.output
    assert call.type == "image_generation_call" and call.id.startswith("ig_") and call.status == "completed"
    assert call.result is not None
    with Image.open(io.BytesIO(base64.b64decode(call.result))) as image:
        assert image.format == "JPEG" and image.size == (1024, 1024)
    details = call.model_dump()
    assert details["output_format"] == "jpeg" and details["size"] == "1024x1024" and details["quality"] == "low"
    assert details["revised_prompt"] == "a red circle on a white background"
    assert message.type == "message" and final.output_text == "Here is your picture."

    kinds = [event.type for event in events]
    assert kinds[2:7] == [
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
        "response.image_generation_call.completed",
        "response.output_item.done",
    ], kinds
    assert "response.function_call_arguments.delta" not in kinds  # the call is the server's own

    # The model was offered the tool as a function, then told the image was shown (not sent its bytes).
    asked, answered = _Drawer.received or []
    assert [tool["function"]["name"] for tool in asked["tools"]] == ["image_generation"]
    shown = answered["messages"][-1]
    assert shown["role"] == "tool" and shown["content"] == "The image was generated and shown to the user."
    assert "tools" not in answered  # one image a response: the tool is no longer offered

    # Stored whole, and continued: the later turn reads that an image was shown.
    assert (await client.responses.retrieve(final.id)).output[0].model_dump() == call.model_dump()
    await client.responses.create(model="remote", input="Thanks!", previous_response_id=final.id)
    later = (_Drawer.received or [])[-1]["messages"]
    assert any(turn.get("content") == "The image was generated and shown to the user." for turn in later)


async def test_a_streamed_call_sends_its_image_part_way_first(drawer_oasis: Harness) -> None:
    from PIL import Image

    client = drawer_oasis.sdk()
    _newer_sdk(client)
    tool = {"type": "image_generation", "size": "1024x1024", "output_format": "png", "partial_images": 2}
    async with client.responses.stream(model="remote", input="Draw me a red circle.", tools=[tool]) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[2:9] == [
        "response.output_item.added",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
        "response.image_generation_call.partial_image",
        "response.image_generation_call.partial_image",
        "response.image_generation_call.completed",
        "response.output_item.done",
    ], kinds
    partials = [event for event in events if event.type == "response.image_generation_call.partial_image"]
    call = final.output[0]
    assert [event.partial_image_index for event in partials] == [0, 1]  # type: ignore[union-attr]
    assert {(event.item_id, event.output_index) for event in partials} == {(call.id, 0)}  # type: ignore[union-attr]
    drawn = []
    for b64 in [*(event.partial_image_b64 for event in partials), call.result]:  # type: ignore[union-attr]
        with Image.open(io.BytesIO(base64.b64decode(b64 or ""))) as image:
            assert image.format == "PNG" and image.size == (1024, 1024)
            drawn.append(np.asarray(image.convert("RGB"), dtype=np.float32))
    # the drawing part way, nearer the final image at the later step
    assert np.abs(drawn[1] - drawn[2]).mean() < np.abs(drawn[0] - drawn[2]).mean()
    assert {(event.size, event.output_format) for event in partials} == {("1024x1024", "png")}  # type: ignore[union-attr]
    # in the background, the stored events have them too
    queued = await client.responses.create(model="remote", input="Draw me a red circle.", tools=[tool], background=True)
    while (polled := await client.responses.retrieve(queued.id)).status in ("queued", "in_progress"):
        await asyncio.sleep(0.05)
    assert polled.status == "completed"
    replayed = [event async for event in await client.responses.retrieve(queued.id, stream=True)]
    kinds = [event.type for event in replayed]
    assert kinds.count("response.image_generation_call.partial_image") == 2, kinds


async def test_bad_image_tools_are_refused_before_anything_is_generated(drawer_oasis: Harness) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"tools": [{"type": "image_generation", "size": "7x7"}]}, 400, "tools[0].size"),
        ({"tools": [{"type": "image_generation", "model": "no-such-model"}]}, 404, "tools[0].model"),
        ({"tools": [{"type": "image_generation", "action": "edit"}]}, 400, "tools[0].action"),  # nothing to edit
        ({"tools": [{"type": "image_generation", "action": "redo"}]}, 400, "tools[0].action"),
        ({"tools": [{"type": "image_generation", "input_image_mask": {}}]}, 400, "tools[0].input_image_mask"),
        (
            {"tools": [{"type": "image_generation", "action": "generate", "input_image_mask": _MASK}]},
            400,
            "tools[0].input_image_mask",
        ),
        ({"tools": [{"type": "image_generation", "input_fidelity": "max"}]}, 400, "tools[0].input_fidelity"),
        (  # the newest image, sent back, is not base64
            {"tools": [{"type": "image_generation", "action": "edit"}], "input": [_SENT_BACK]},
            400,
            "input",
        ),
        (
            {"tools": [{"type": "image_generation", "input_image_mask": {"file_id": "file-nope"}}]},
            404,
            "tools[0].input_image_mask.file_id",
        ),
        (  # an image this server would have to fetch
            {"tools": [{"type": "image_generation", "action": "edit"}], "input": _with_image("https://x.test/a.png")},
            400,
            "input",
        ),
        (  # a model that does not edit
            {"tools": [{"type": "image_generation", "action": "edit", "model": "dall-e-3"}], "input": _SMALL_SCENE},
            400,
            "tools[0].model",
        ),
        (  # a mask of another size than the image
            {
                "tools": [{"type": "image_generation", "action": "edit", "input_image_mask": _MASK}],
                "input": _SMALL_SCENE,
            },
            400,
            "tools[0].input_image_mask",
        ),
        ({"tools": [{"type": "image_generation", "partial_images": 9}]}, 400, "tools[0].partial_images"),
        ({"tools": [{"type": "image_generation", "output_compression": 150}]}, 400, "tools[0].output_compression"),
        ({"tools": [{"type": "image_generation", "output_compression": "high"}]}, 400, "tools[0].output_compression"),
        ({"tools": [{"type": "image_generation", "background": "transparent"}]}, 400, "tools[0].background"),
        ({"tools": [DRAW, DRAW]}, 400, "tools[1]"),
        ({"tools": [DRAW, {"type": "function", "name": "image_generation"}]}, 400, "tools[1].name"),
        ({"tool_choice": {"type": "image_generation"}}, 400, "tool_choice"),
    ]
    async with drawer_oasis.http() as http:
        for body, status, param in cases:
            reply = await http.post("/v1/responses", json={"model": "remote", "input": "hi", **body})
            assert reply.status_code == status, (body, reply.text)
            assert reply.json()["error"]["param"] == param, body
    assert _Drawer.received == []  # nothing was generated


def _data_url(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png(pixels)).decode()


def _with_image(url: str, text: str = "Make the right half green.") -> list[dict[str, Any]]:
    parts = [{"type": "input_text", "text": text}, {"type": "input_image", "image_url": url}]
    return [{"role": "user", "content": parts}]


_RIGHT_HALF = np.full((1024, 1024, 4), 255, dtype=np.uint8)
_RIGHT_HALF[:, 512:, 3] = 0  # transparent where the image is redrawn
_MASK = {"image_url": _data_url(_RIGHT_HALF)}
_SENT_BACK = {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "%%%"}
_SMALL_SCENE = _with_image(_data_url(scene(64)))


class _Chooser(_Drawer):
    """A model that edits the conversation's image whenever the tool lets it choose (and draws anew otherwise)."""

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        offered = body.get("tools") or []
        if body["messages"][-1]["role"] == "tool" or not offered:
            return [{"role": "assistant", "content": "Done."}], "stop"
        arguments: dict[str, Any] = {"prompt": "a green circle"}
        if "action" in offered[0]["function"]["parameters"]["properties"]:
            arguments["action"] = "edit"
        call = {"index": 0, "id": "call_0", "type": "function"}
        function = {"name": "image_generation", "arguments": json.dumps(arguments)}
        return [{"role": "assistant"}, {"tool_calls": [{**call, "function": function}]}], "tool_calls"


async def test_the_tool_edits_the_input_image_where_its_mask_says(drawer_oasis: Harness) -> None:
    client = drawer_oasis.sdk()
    _newer_sdk(client)
    source = scene(1024)
    tool = {"type": "image_generation", "action": "edit", "input_image_mask": _MASK, "size": "1024x1024"}
    response = await client.responses.create(
        model="remote",
        input=_with_image(_data_url(source)),
        tools=[tool],  # type: ignore[list-item]
    )
    call = response.output[0]
    assert call.type == "image_generation_call" and call.status == "completed"
    assert call.model_dump()["action"] == "edit"
    edited = pixels_of(base64.b64decode(call.result or ""))[:, :, :3]
    assert np.array_equal(edited[:, :512], source[:, :512])  # outside the mask: the input image's own pixels
    assert not np.array_equal(edited[:, 512:], source[:, 512:])
    assert response.output_text == "Here is your picture."
    # the same mask as a file of the project's
    stored = await client.files.create(file=("mask.png", png(_RIGHT_HALF)), purpose="vision")
    by_file = {**tool, "input_image_mask": {"file_id": stored.id}}
    again = await client.responses.create(
        model="remote",
        input=_with_image(_data_url(source)),
        tools=[by_file],  # type: ignore[list-item]
    )
    redrawn = pixels_of(base64.b64decode(again.output[0].result or ""))[:, :, :3]  # type: ignore[union-attr]
    assert np.array_equal(redrawn[:, :512], source[:, :512])


async def test_auto_lets_the_model_edit_the_image_an_earlier_turn_drew(start_oasis: Callable[..., Any]) -> None:
    _Chooser.received = []
    async with upstream_oasis(start_oasis, _Chooser, SHAPES) as harness:
        client = harness.sdk()
        _newer_sdk(client)
        tool = {"type": "image_generation", "size": "1024x1024", "input_image_mask": _MASK}
        first = await client.responses.create(model="remote", input="Draw a scene.", tools=[tool])  # type: ignore[list-item]
        drawn = first.output[0]
        assert drawn.type == "image_generation_call" and drawn.model_dump()["action"] == "generate"
        # nothing to edit yet: the model was offered the plain tool
        offered = (_Chooser.received or [])[0]["tools"][0]["function"]["parameters"]["properties"]
        assert list(offered) == ["prompt"]
        second = await client.responses.create(
            model="remote",
            input="Now put a green circle on the right.",
            tools=[tool],  # type: ignore[list-item]
            previous_response_id=first.id,
        )
        edit = second.output[0]
        assert edit.type == "image_generation_call" and edit.model_dump()["action"] == "edit"
        before = pixels_of(base64.b64decode(drawn.result or ""))[:, :, :3]
        after = pixels_of(base64.b64decode(edit.result or ""))[:, :, :3]
        assert np.array_equal(after[:, :512], before[:, :512])  # the earlier image, kept outside the mask
        assert not np.array_equal(after[:, 512:], before[:, 512:])
        # `generate` never edits, whatever the conversation holds
        anew = await client.responses.create(
            model="remote",
            input="Another one.",
            tools=[{"type": "image_generation", "size": "1024x1024", "action": "generate"}],
            previous_response_id=second.id,
        )
        assert anew.output[0].model_dump()["action"] == "generate"
        assert list((_Chooser.received or [])[-2]["tools"][0]["function"]["parameters"]["properties"]) == ["prompt"]
        # `auto` with a model that cannot edit (DALL-E 3) offers no edit, and draws anew
        dall_e_3 = {"type": "image_generation", "model": "dall-e-3", "size": "1024x1024"}
        drawn_anew = await client.responses.create(
            model="remote",
            input="And one more.",
            tools=[dall_e_3],
            previous_response_id=anew.id,  # type: ignore[list-item]
        )
        assert drawn_anew.output[0].model_dump()["action"] == "generate"
        assert list((_Chooser.received or [])[-2]["tools"][0]["function"]["parameters"]["properties"]) == ["prompt"]


async def test_a_drawing_that_fails_ends_the_response_failed_with_its_call(start_oasis: Callable[..., Any]) -> None:
    _Drawer.received = []
    # an image model whose server does not answer: the drawing fails after the call began
    down = {"id": "down-painter", "engine": "upstream", "options": {"base_url": f"http://127.0.0.1:{free_port()}/v1"}}
    async with upstream_oasis(start_oasis, _Drawer, down) as harness, harness.http() as http:
        body = {
            "model": "remote",
            "input": "Draw me a red circle.",
            "tools": [{"type": "image_generation", "model": "down-painter"}],
            "stream": True,
        }
        reply = await http.post("/v1/responses", json=body)
    assert reply.status_code == 200, reply.text
    events = [json.loads(line[len("data: ") :]) for line in reply.text.splitlines() if line.startswith("data: ")]
    kinds = [event["type"] for event in events]
    assert kinds[-2:] == ["error", "response.failed"], kinds
    added = next(event["item"] for event in events if event["type"] == "response.output_item.added")
    assert added["type"] == "image_generation_call" and added["status"] == "in_progress"
    # the call the stream showed begun is ended before the error, failed, and the failed response holds it
    done = events[-3]
    assert done["type"] == "response.output_item.done" and done["item"]["id"] == added["id"]
    assert done["item"]["status"] == "failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["message"] == events[-2]["message"]
    assert [(item["id"], item["status"]) for item in failed["output"]] == [(added["id"], "failed")]


async def test_the_agents_sdks_hosted_image_generation_tool_draws_here(drawer_oasis: Harness) -> None:
    """OpenAI's Agents SDK with its hosted ImageGenerationTool: the image is drawn by the model served here and
    reaches the agent as its tool call item, the image in base64."""
    from PIL import Image

    config = {"type": "image_generation", "size": "1024x1024"}
    agents, agent = hosted_tool_agent(drawer_oasis.sdk(), "ImageGenerationTool", tool_config=config)
    result = await agents.Runner.run(agent, "Draw me a red circle.", max_turns=2)
    (drawn,) = [item.raw_item for item in result.new_items if item.type == "tool_call_item"]
    assert drawn.type == "image_generation_call" and drawn.status == "completed"
    with Image.open(io.BytesIO(base64.b64decode(drawn.result))) as image:
        assert image.size == (1024, 1024)
    assert result.final_output == "Here is your picture."
