"""The `diffusers` engine through the SDK, on a Stable Diffusion pipeline folder the test builds from configs
(random weights, saved with save_pretrained) and oasis loads by path like a user's download (issue 17)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tests.api.test_images import pixels_of, png, scene
from tests.conftest import Harness
from tests.images_torch.tiny_pipeline import build_tiny_pipeline


@pytest.fixture(scope="module")
def pipeline_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("sd"))


@pytest.fixture
async def sd_oasis(start_oasis: Callable[..., Any], pipeline_folder: Path) -> Harness:
    harness: Harness = await start_oasis(
        engine_factories=None,
        models=[
            {
                "id": "tiny-sd",
                "engine": "diffusers",
                "path": str(pipeline_folder),
                "aliases": ["dall-e-2"],
                "options": {"steps": 4, "device": "cpu", "threads": 2},
            },
            {
                "id": "tiny-sd-ddim",
                "engine": "diffusers",
                "path": str(pipeline_folder),
                "options": {"steps": 3, "scheduler": "DDIMScheduler"},
            },
            {
                "id": "tiny-sd-one-step",  # as a turbo model is set up: img2img at strength 0.6 had no step left
                "engine": "diffusers",
                "path": str(pipeline_folder),
                "options": {"steps": 1},
            },
            {
                "id": "tiny-sd-bad",
                "engine": "diffusers",
                "path": str(pipeline_folder),
                "options": {"scheduler": "Nope"},
            },
        ],
    )
    return harness


def decoded(reply: Any) -> list[np.ndarray]:
    return [pixels_of(base64.b64decode(item.b64_json or "")) for item in reply.data]


async def test_text_to_image_at_the_sizes_asked_for(sd_oasis: Harness) -> None:
    client = sd_oasis.sdk()
    pictures = decoded(
        await client.images.generate(prompt="a red circle", n=2, size="256x256", response_format="b64_json")
    )
    assert [p.shape for p in pictures] == [(256, 256, 3)] * 2
    assert not np.array_equal(pictures[0], pictures[1])
    other = decoded(
        await client.images.generate(model="tiny-sd-ddim", prompt="a boat", size="256x256", response_format="b64_json")
    )
    assert other[0].shape == (256, 256, 3)
    linked = await client.images.generate(prompt="a red circle", size="256x256")
    async with sd_oasis.http(api_key=None) as browser:
        assert pixels_of((await browser.get(linked.data[0].url or "")).content).shape == (256, 256, 3)


def _frames(body: str) -> list[dict[str, Any]]:
    """A typed event stream's events (this venv's SDK may not stream images)."""
    return [
        json.loads(line.removeprefix("data: "))
        for frame in body.split("\n\n")
        for line in frame.splitlines()
        if line.startswith("data: ")
    ]


async def test_a_streamed_drawing_sends_its_latents_decoded_part_way(sd_oasis: Harness) -> None:
    async with sd_oasis.http() as http:
        body = {"model": "tiny-sd", "prompt": "a red circle", "size": "256x256", "stream": True, "partial_images": 3}
        reply = await http.post("/v1/images/generations", json=body)
        assert reply.status_code == 200, reply.text
        events = _frames(reply.text)
        assert [event["type"] for event in events] == ["image_generation.partial_image"] * 3 + [
            "image_generation.completed"
        ]
        assert [event.get("partial_image_index") for event in events] == [0, 1, 2, None]
        pictures = [pixels_of(base64.b64decode(event["b64_json"])) for event in events]
        assert all(picture.shape == (256, 256, 3) and picture.std() > 1 for picture in pictures)  # not blank
        assert not any(np.array_equal(picture, pictures[-1]) for picture in pictures[:-1])
        # an edit's previews keep every pixel outside the mask, as its image does
        source = scene()
        mask = np.full((256, 256, 4), 255, dtype=np.uint8)
        mask[64:192, 64:192, 3] = 0
        edited = await http.post(
            "/v1/images/edits",
            data={"model": "tiny-sd", "prompt": "a cat", "size": "256x256", "stream": "true", "partial_images": "2"},
            files=[("image", ("scene.png", png(source), "image/png")), ("mask", ("mask.png", png(mask), "image/png"))],
        )
        assert edited.status_code == 200, edited.text
        shown = _frames(edited.text)
        assert [event["type"] for event in shown] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
        outside = mask[:, :, 3] != 0
        for event in shown:
            picture = pixels_of(base64.b64decode(event["b64_json"]))
            assert np.array_equal(picture[outside], source[outside])


async def test_inpainting_keeps_what_is_outside_the_mask(sd_oasis: Harness) -> None:
    source = scene()
    mask = np.full((256, 256, 4), 255, dtype=np.uint8)
    mask[64:192, 64:192, 3] = 0
    pictures = decoded(
        await sd_oasis.sdk().images.edit(
            image=("scene.png", png(source), "image/png"),
            mask=("mask.png", png(mask), "image/png"),
            prompt="a cat",
            n=2,
            size="256x256",
            response_format="b64_json",
        )
    )
    outside = mask[:, :, 3] != 0
    for picture in pictures:
        assert np.array_equal(picture[outside], source[outside])
        assert not np.array_equal(picture[~outside], source[~outside])


async def test_variations_are_image_to_image(sd_oasis: Harness) -> None:
    pictures = decoded(
        await sd_oasis.sdk().images.create_variation(
            image=("scene.png", png(scene()), "image/png"), n=2, size="256x256", response_format="b64_json"
        )
    )
    assert [p.shape for p in pictures] == [(256, 256, 3)] * 2
    assert not np.array_equal(pictures[0], pictures[1])
    one_step = await sd_oasis.sdk().images.create_variation(
        model="tiny-sd-one-step", image=("scene.png", png(scene()), "image/png"), size="256x256"
    )
    assert len(one_step.data) == 1 and one_step.data[0].url


async def test_a_broken_option_is_the_model_failing_to_load(sd_oasis: Harness) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await sd_oasis.sdk().images.generate(model="tiny-sd-bad", prompt="x")
    assert caught.value.status_code == 503
    assert "Nope" in caught.value.message
