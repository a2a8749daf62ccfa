"""Images through the SDK on the shipped model (oasis-shapes-32, alias dall-e-2/dall-e-3): the three operations,
OpenAI's rules per model name, signed links, edits that keep every pixel outside the mask, and a 400 naming the
part for each bad input (issue 17). What the model draws is judged in tests/test_image_model.py."""

from __future__ import annotations

import base64
import inspect
import io
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import openai
import pytest

from oasis.services.images.links import LIFETIME_SECONDS
from tests.conftest import E5, Harness

SDK_STREAMS_IMAGES = "stream" in inspect.signature(openai.resources.images.AsyncImages.generate).parameters
SDK_STREAMS_EDITS = "stream" in inspect.signature(openai.resources.images.AsyncImages.edit).parameters
SHAPES = {
    "id": "oasis-shapes-32",
    "engine": "shapes",
    "package": "oasis",
    "aliases": ["dall-e-2", "dall-e-3", "gpt-image-1"],
}


@pytest.fixture
async def image_oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories=None, models=[SHAPES, E5])
    return harness


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels_of(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def jpeg_step(data: bytes) -> int:
    """The quantization step of a JPEG's first (luminance DC) coefficient."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return int(image.quantization[0][0])  # type: ignore[attr-defined]


def scene(size: int = 256, width: int | None = None) -> np.ndarray:
    """A white canvas with a red square on the left and a blue one on the right."""
    width = width or size
    image = np.full((size, width, 3), 250, dtype=np.uint8)
    image[size // 3 : 2 * size // 3, width // 10 : width // 3] = (220, 30, 30)
    image[size // 3 : 2 * size // 3, 2 * width // 3 : 9 * width // 10] = (35, 70, 225)
    return image


def encoded(pixels: np.ndarray, file_format: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=file_format)
    return buffer.getvalue()


def red_left_blue_right(picture: np.ndarray) -> bool:
    """The scene's composition and colours: red in the left third's middle, blue in the right's."""
    height, width = picture.shape[:2]
    middle = picture[int(height * 0.4) : int(height * 0.6)].astype(np.float32)
    left = middle[:, int(width * 0.12) : int(width * 0.3)].mean((0, 1))
    right = middle[:, int(width * 0.7) : int(width * 0.88)].mean((0, 1))
    return bool(left[0] > left[2] + 40 and right[2] > right[0] + 40)


async def error_of(call: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        await call
    return caught.value


async def test_generations_as_base64_and_as_links_a_browser_opens(image_oasis: Harness) -> None:
    client = image_oasis.sdk()
    reply = await client.images.generate(
        prompt="a red circle on the left", n=2, size="256x256", response_format="b64_json"
    )
    assert abs(reply.created - time.time()) < 60
    pictures = [pixels_of(base64.b64decode(item.b64_json or "")) for item in reply.data]
    assert [p.shape for p in pictures] == [(256, 256, 3)] * 2
    assert not np.array_equal(pictures[0], pictures[1])  # two samples, not one image twice
    assert all(item.revised_prompt is None for item in reply.data)  # dall-e-2 does not revise

    linked = await client.images.generate(prompt="two blue squares", size="512x512")
    url = linked.data[0].url or ""
    assert url.startswith(image_oasis.base_url + "/v1/images/files/")
    async with image_oasis.http(api_key=None) as browser:
        opened = await browser.get(url)
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/png"
    assert pixels_of(opened.content).shape == (512, 512, 3)
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    assert abs(expires - (time.time() + LIFETIME_SECONDS)) < 60


async def test_dall_e_3_rules_and_its_revised_prompt(image_oasis: Harness) -> None:
    client = image_oasis.sdk()
    wide = await client.images.generate(
        model="dall-e-3",
        prompt="a yellow star at the top",
        size="1792x1024",
        response_format="b64_json",
        quality="hd",
        style="natural",
    )
    assert pixels_of(base64.b64decode(wide.data[0].b64_json or "")).shape == (1024, 1792, 3)
    assert wide.data[0].revised_prompt == "a yellow star at the top"
    tall = await client.images.generate(
        model="dall-e-3", prompt="a green circle", size="1024x1792", response_format="b64_json"
    )
    assert pixels_of(base64.b64decode(tall.data[0].b64_json or "")).shape == (1792, 1024, 3)

    for call, param in [
        (client.images.generate(model="dall-e-3", prompt="a star", n=2), "n"),
        (client.images.generate(model="dall-e-3", prompt="a star", size="256x256"), "size"),
        (client.images.generate(model="dall-e-2", prompt="a star", size="1792x1024"), "size"),
        (client.images.generate(model="dall-e-2", prompt="x" * 1001), "prompt"),
        (client.images.generate(model="dall-e-3", prompt="x" * 4001), "prompt"),
        (client.images.generate(prompt="a star", n=11), "n"),
        (client.images.generate(prompt="a star", n=0), "n"),
        (client.images.generate(prompt="a star", size="300x300"), "size"),  # type: ignore[arg-type]
        (client.images.generate(prompt="a star", response_format="xml"), "response_format"),  # type: ignore[arg-type]
        (client.images.generate(prompt="a star", quality="ultra"), "quality"),  # type: ignore[arg-type]
        (client.images.generate(prompt="   "), "prompt"),
        (client.images.generate(model="multilingual-e5-small", prompt="a star"), "model"),
    ]:
        error = await error_of(call)
        assert error.status_code == 400, (param, error)
        assert error.body["param"] == param, error.body  # type: ignore[index]
    missing = await error_of(client.images.generate(model="no-such-painter", prompt="a star"))
    assert missing.status_code == 404 and missing.body["code"] == "model_not_found"  # type: ignore[index]
    # the model's own id takes every size of the spec
    own = await client.images.generate(model="oasis-shapes-32", prompt="a pink square", size="1792x1024")
    assert own.data[0].url


async def test_gpt_image_models_answer_base64_in_the_format_asked(image_oasis: Harness) -> None:
    """The GPT image models' surface (OpenAI added it after the 2.0.0 spec; its fields go as extra_body so that the
    May-2024 SDK sends them too): their sizes and qualities, output_format and output_compression, base64 only, and
    the settings used named in the answer."""
    client = image_oasis.sdk()
    jpeg: Any = {"output_format": "jpeg", "output_compression": 90}
    wide = await client.images.generate(
        model="gpt-image-1", prompt="a red circle on the left", size="1536x1024", quality="high", extra_body=jpeg
    )
    (item,) = wide.data
    assert item.url is None and item.revised_prompt is None
    picture = base64.b64decode(item.b64_json or "")
    assert picture[:3] == b"\xff\xd8\xff" and pixels_of(picture).shape == (1024, 1536, 3)  # a JPEG, landscape
    used = wide.model_dump()
    assert (used["background"], used["output_format"], used["quality"], used["size"]) == (
        "opaque",
        "jpeg",
        "high",
        "1536x1024",
    )
    coarse = await client.images.generate(
        model="gpt-image-1", prompt="a red circle on the left", extra_body={**jpeg, "output_compression": 5}
    )
    # output_compression is JPEG's quality: the lower, the coarser its quantization
    assert jpeg_step(base64.b64decode(coarse.data[0].b64_json or "")) > 10 * jpeg_step(picture)

    assert used["usage"]["total_tokens"] == 0  # OpenAI's image tokens: a local model spends none
    # no model named, but a field only the GPT image models take: OpenAI's default is then gpt-image-1
    auto = await client.images.generate(prompt="two blue squares", extra_body={"output_format": "webp"})
    used = auto.model_dump()
    assert (used["quality"], used["size"], used["output_format"]) == ("medium", "1024x1024", "webp")  # what auto drew
    webp = base64.b64decode(auto.data[0].b64_json or "")
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP" and pixels_of(webp).shape == (1024, 1024, 3)

    # a model asked for by its own id takes these fields too, and links the format it was asked for
    linked = await client.images.generate(
        model="oasis-shapes-32", prompt="a star", size="1024x1536", extra_body={"output_format": "jpeg"}
    )
    url = linked.data[0].url or ""
    assert urlsplit(url).path.endswith(".jpeg")
    async with image_oasis.http(api_key=None) as browser:
        opened = await browser.get(url)
    assert opened.headers["content-type"] == "image/jpeg" and pixels_of(opened.content).shape == (1536, 1024, 3)

    for fields, param in [
        ({"model": "gpt-image-1", "response_format": "url"}, "response_format"),
        ({"model": "gpt-image-1", "size": "256x256"}, "size"),
        ({"model": "gpt-image-1", "quality": "hd"}, "quality"),
        ({"model": "gpt-image-1", "prompt": "x" * 32001}, "prompt"),
        ({"model": "gpt-image-1", "background": "transparent"}, "background"),
        ({"model": "gpt-image-1", "output_format": "gif"}, "output_format"),
        ({"model": "gpt-image-1", "output_compression": 101}, "output_compression"),
        ({"model": "gpt-image-1", "partial_images": 4}, "partial_images"),
        ({"model": "dall-e-2", "output_format": "jpeg"}, "output_format"),
        ({"model": "dall-e-3", "background": "transparent"}, "background"),
        ({"model": "dall-e-2", "size": "auto"}, "size"),
        ({"model": "dall-e-3", "quality": "high"}, "quality"),
        ({"model": "dall-e-2", "stream": True}, "stream"),
    ]:
        body = {"prompt": "a star", **fields}
        async with image_oasis.http() as http:
            refused = await http.post("/v1/images/generations", json=body)
        assert refused.status_code == 400, (fields, refused.text)
        assert refused.json()["error"]["param"] == param, (fields, refused.json())
    # values of those fields that ask nothing of a DALL-E model are no reason to refuse it (clients send them)
    harmless = {"stream": False, "background": "auto", "moderation": "auto", "partial_images": 0, "quality": "auto"}
    async with image_oasis.http() as http:
        plain = await http.post(
            "/v1/images/generations",
            json={"model": "dall-e-2", "prompt": "a star", "size": "256x256", "output_format": "png", **harmless},
        )
    assert plain.status_code == 200 and plain.json()["data"][0]["url"], plain.text
    assert "output_format" not in plain.json()  # the DALL-E models' answer names no settings


@pytest.mark.skipif(not SDK_STREAMS_IMAGES, reason="this openai SDK does not stream images")
async def test_a_streamed_generation_sends_partial_images_then_each_image_completed(image_oasis: Harness) -> None:
    client = image_oasis.sdk()
    stream = await client.images.generate(
        model="gpt-image-1", prompt="a green star", n=2, stream=True, partial_images=2, output_format="webp"
    )
    events = [event async for event in stream]
    # each of the two previews shows both images part way, then each image comes whole
    assert [event.type for event in events] == ["image_generation.partial_image"] * 4 + [
        "image_generation.completed"
    ] * 2
    assert [event.partial_image_index for event in events[:4]] == [0, 0, 1, 1]  # type: ignore[union-attr]
    pictures = [base64.b64decode(event.b64_json) for event in events]
    assert all(picture[8:12] == b"WEBP" and pixels_of(picture).shape == (1024, 1024, 3) for picture in pictures)
    final = [pixels_of(picture).astype(np.float32) for picture in pictures[4:]]
    assert not np.array_equal(final[0], final[1])
    assert {(event.output_format, event.size, event.quality, event.background) for event in events} == {
        ("webp", "1024x1024", "medium", "opaque")
    }
    assert all(event.usage.total_tokens == 0 for event in events[4:])  # type: ignore[union-attr]
    # the later preview is nearer each final image than the earlier one: the drawing part way, not a stand-in
    for image in (0, 1):
        early, late = (pixels_of(pictures[step * 2 + image]).astype(np.float32) for step in (0, 1))
        assert np.abs(late - final[image]).mean() < np.abs(early - final[image]).mean()
    with pytest.raises(openai.BadRequestError) as refused:
        await client.images.generate(model="oasis-shapes-32", prompt="a star", stream=True, response_format="url")
    assert refused.value.param == "response_format"
    # refused before anything is drawn, with partial images asked for too: the status is a 400's
    with pytest.raises(openai.BadRequestError) as transparent:
        await client.images.generate(
            model="gpt-image-1", prompt="a star", stream=True, partial_images=2, background="transparent"
        )
    assert transparent.value.param == "background"


async def test_links_cannot_be_altered_or_used_after_the_hour(image_oasis: Harness) -> None:
    _, ours = await image_oasis.container.keys.create("ours")
    _, theirs = await image_oasis.container.keys.create("theirs")
    url = (await image_oasis.sdk(ours).images.generate(prompt="a red square", size="256x256")).data[0].url or ""
    other = (await image_oasis.sdk(theirs).images.generate(prompt="a blue star", size="256x256")).data[0].url or ""
    path, query = url.split("?")
    other_path = other.split("?")[0]
    assert path.split("/")[-2] != other_path.split("/")[-2]  # each project's images are stored apart
    async with image_oasis.http(api_key=None) as browser:
        assert (await browser.get(url)).status_code == 200
        forged = query.replace("signature=", "signature=0")
        assert (await browser.get(f"{path}?{forged}")).status_code == 403
        # their link's signature does not open our image, nor ours theirs
        their_query = other.split("?")[1]
        assert (await browser.get(f"{path}?{their_query}")).status_code == 403
        assert (await browser.get(f"{other_path}?{query}")).status_code == 403
        later = query.replace("expires=", "expires=1")
        assert (await browser.get(f"{path}?{later}")).status_code == 403  # a longer life is not granted either

    links = image_oasis.container.images.links
    name = path.split("/v1/images/files/")[1]
    expired_at = int(time.time()) - 5
    signature = links._signature(await links._key(), name, expired_at)
    async with image_oasis.http(api_key=None) as browser:
        gone = await browser.get(f"{path}?expires={expired_at}&signature={signature}")
    assert gone.status_code == 403 and "expired" in gone.json()["error"]["message"]

    assert await links.sweep(now=time.time()) == 0  # nothing is an hour old yet
    assert await links.sweep(now=time.time() + LIFETIME_SECONDS + 120) == 2
    async with image_oasis.http(api_key=None) as browser:
        assert (await browser.get(url)).status_code in (403, 404)


async def test_an_edit_keeps_every_pixel_outside_the_mask(image_oasis: Harness) -> None:
    client = image_oasis.sdk()
    source = scene()
    mask = np.full((256, 256, 4), 255, dtype=np.uint8)
    mask[:, 128:, 3] = 0  # redraw the right half
    reply = await client.images.edit(
        image=("scene.png", png(source), "image/png"),
        mask=("mask.png", png(mask), "image/png"),
        prompt="a green circle on the right",
        n=2,
        size="256x256",
        response_format="b64_json",
    )
    for item in reply.data:
        edited = pixels_of(base64.b64decode(item.b64_json or ""))
        assert edited.shape == (256, 256, 3)
        assert np.array_equal(edited[:, :128], source[:, :128])
        assert not np.array_equal(edited[:, 128:], source[:, 128:])

    # without a mask, the image's own transparent pixels are the ones redrawn
    with_hole = np.dstack([source, np.full((256, 256), 255, dtype=np.uint8)])
    with_hole[:128, :, 3] = 0
    top_redrawn = await client.images.edit(
        image=("scene.png", png(with_hole), "image/png"), prompt="a star", size="256x256", response_format="b64_json"
    )
    edited = pixels_of(base64.b64decode(top_redrawn.data[0].b64_json or ""))
    assert np.array_equal(edited[128:], source[128:])

    # a larger size: the source is enlarged, and outside the mask the answer is that enlargement exactly
    enlarged = await client.images.edit(
        image=("scene.png", png(source), "image/png"),
        mask=("mask.png", png(mask), "image/png"),
        prompt="a star",
        size="512x512",
    )
    async with image_oasis.http(api_key=None) as browser:
        big = pixels_of((await browser.get(enlarged.data[0].url or "")).content)
    from oasis.services.images.pictures import resized

    assert np.array_equal(big[:, :256], resized(source, 512, 512)[:, :256])


async def test_gpt_image_edits_take_their_own_surface(image_oasis: Harness) -> None:
    """Edits under a GPT image name (fields as extra_body, so that the May-2024 SDK sends them too): JPEG and WebP
    images of any shape, the size nearest the image's for `auto`, the whole image redrawn to the prompt when no mask
    is sent (its composition kept), `input_fidelity`, and the settings used named in the answer."""
    client = image_oasis.sdk()
    wide = scene(256, 384)
    whole = await client.images.edit(
        model="gpt-image-1",
        image=("wide.jpg", encoded(wide, "JPEG"), "image/jpeg"),
        prompt="a red square and a blue square",
        n=2,
        extra_body={"size": "auto", "quality": "high", "output_format": "webp"},
    )
    used = whole.model_dump()
    assert (used["size"], used["quality"], used["output_format"], used["background"]) == (
        "1536x1024",
        "high",
        "webp",
        "opaque",
    )
    assert used["usage"]["total_tokens"] == 0
    drawn = [pixels_of(base64.b64decode(item.b64_json or "")) for item in whole.data]
    assert all(picture.shape == (1024, 1536, 3) for picture in drawn)
    from oasis.services.images.pictures import resized

    source = resized(wide, 1536, 1024).astype(np.float32)
    for picture in drawn:
        assert red_left_blue_right(picture) and not np.array_equal(picture, source)

    # input_fidelity high keeps more of the source than low
    async def distance(fidelity: str) -> float:
        reply = await client.images.edit(
            model="gpt-image-1",
            image=("wide.webp", encoded(wide, "WEBP"), "image/webp"),
            prompt="a red square and a blue square",
            n=3,
            extra_body={"input_fidelity": fidelity, "size": "1536x1024"},
        )
        pictures = [pixels_of(base64.b64decode(item.b64_json or "")).astype(np.float32) for item in reply.data]
        return float(np.mean([np.abs(picture - source).mean() for picture in pictures]))

    assert await distance("high") < await distance("low")

    # a mask still keeps every pixel outside it, at a portrait size from a portrait image
    tall = scene(384, 256)
    mask = np.full((384, 256, 4), 255, dtype=np.uint8)
    mask[:192, :, 3] = 0  # redraw the top half
    masked = await client.images.edit(
        model="gpt-image-1",
        image=("tall.png", png(tall), "image/png"),
        mask=("mask.png", png(mask), "image/png"),
        prompt="a green star",
        extra_body={"size": "1024x1536"},
    )
    edited = pixels_of(base64.b64decode(masked.data[0].b64_json or ""))
    assert edited.shape == (1536, 1024, 3)
    assert np.array_equal(edited[768:], resized(tall, 1024, 1536)[768:])

    # a model's own id redraws the whole of an image with an alpha channel but no transparent pixel
    opaque = np.dstack([scene(), np.full((256, 256), 255, dtype=np.uint8)])
    redrawn = await client.images.edit(
        model="oasis-shapes-32",
        image=("opaque.png", png(opaque), "image/png"),
        prompt="a red square and a blue square",
        size="256x256",
        response_format="b64_json",
    )
    picture = pixels_of(base64.b64decode(redrawn.data[0].b64_json or ""))
    assert red_left_blue_right(picture) and not np.array_equal(picture, scene())

    # a phone's photo, larger than 4096 pixels a side: scaled down and edited, at the size nearest its shape
    photo = await client.images.edit(
        model="gpt-image-1",
        image=("photo.jpg", encoded(scene(3000, 5000), "JPEG"), "image/jpeg"),
        prompt="a red square and a blue square",
        extra_body={"size": "auto", "quality": "low"},
    )
    assert photo.model_dump()["size"] == "1536x1024"
    assert red_left_blue_right(pixels_of(base64.b64decode(photo.data[0].b64_json or "")))

    two = [("image[]", ("a.png", png(scene()), "image/png")), ("image[]", ("b.png", png(scene()), "image/png"))]
    cases: list[tuple[dict[str, str], Any, str]] = [
        ({"model": "gpt-image-1", "input_fidelity": "medium"}, None, "input_fidelity"),
        ({"model": "gpt-image-1", "partial_images": "4"}, None, "partial_images"),
        ({"model": "gpt-image-1", "response_format": "url"}, None, "response_format"),
        ({"model": "gpt-image-1", "background": "transparent"}, None, "background"),
        ({"model": "gpt-image-1", "size": "256x256"}, None, "size"),
        ({"model": "gpt-image-1", "stream": "maybe"}, None, "stream"),
        ({"model": "dall-e-2", "output_format": "jpeg"}, None, "output_format"),
        ({"model": "dall-e-2", "input_fidelity": "high"}, None, "input_fidelity"),
        ({"model": "dall-e-2"}, [("image", ("a.jpg", encoded(scene(), "JPEG"), "image/jpeg"))], "image"),
        ({"model": "dall-e-2"}, two, "image"),  # DALL-E 2 edits one image
        ({}, two, "image"),  # several images ask for gpt-image-1, and the local model edits one
        ({"model": "gpt-image-1"}, [("image", ("a.gif", b"GIF89a not a picture", "image/gif"))], "image"),
        ({"model": "gpt-image-1", "output_format": "jpg"}, None, "output_format"),
        ({"model": "gpt-image-1", "output_compression": "150"}, None, "output_compression"),
        ({"model": "gpt-image-1", "background": "green"}, None, "background"),
        ({"model": "gpt-image-1"}, two * 9, "image"),  # 18 images: OpenAI's models take 16
        ({"model": "dall-e-2"}, [("image", ("a.png", png(opaque), "image/png"))], "image"),  # nothing to redraw
    ]
    async with image_oasis.http() as http:
        for fields, files, param in cases:
            refused = await http.post(
                "/v1/images/edits",
                data={"prompt": "a star", **fields},
                files=files or [("image", ("a.png", png(scene()), "image/png"))],
            )
            assert refused.status_code == 400, (fields, refused.text)
            assert refused.json()["error"]["param"] == param, (fields, refused.json())


@pytest.mark.skipif(not SDK_STREAMS_EDITS, reason="this openai SDK does not stream edits")
async def test_a_streamed_edit_sends_partial_images_then_each_image_completed(image_oasis: Harness) -> None:
    client = image_oasis.sdk()
    stream = await client.images.edit(
        model="gpt-image-1",
        image=[("scene.png", png(scene()), "image/png")],  # a list, as several are sent: `image[]`
        prompt="a red square and a blue square",
        n=2,
        stream=True,
        partial_images=1,
        output_format="jpeg",
        input_fidelity="high",
    )
    events = [event async for event in stream]
    assert [event.type for event in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"] * 2
    pictures = [pixels_of(base64.b64decode(event.b64_json)) for event in events[2:]]
    assert all(picture.shape == (1024, 1024, 3) and red_left_blue_right(picture) for picture in pictures)
    assert {(event.output_format, event.size, event.quality) for event in events} == {("jpeg", "1024x1024", "medium")}
    # with a mask, every pixel outside it is the source's in the partial images too
    source = scene()
    mask = np.full((256, 256, 4), 255, dtype=np.uint8)
    mask[:, 128:, 3] = 0  # redraw the right half
    masked = await client.images.edit(
        model="gpt-image-1",
        image=("scene.png", png(source), "image/png"),
        mask=("mask.png", png(mask), "image/png"),
        prompt="a green circle on the right",
        size="1024x1024",
        stream=True,
        partial_images=3,
    )
    shown = [event async for event in masked]
    assert [event.type for event in shown] == ["image_edit.partial_image"] * 3 + ["image_edit.completed"]
    final = pixels_of(base64.b64decode(shown[-1].b64_json))  # outside the mask, the source enlarged
    for event in shown[:-1]:
        partial = pixels_of(base64.b64decode(event.b64_json))
        assert np.array_equal(partial[:, :512], final[:, :512]) and not np.array_equal(partial[:, 512:], final[:, 512:])
    with pytest.raises(openai.BadRequestError) as several:
        await client.images.edit(
            model="gpt-image-1",
            image=[("a.png", png(scene()), "image/png"), ("b.png", png(scene()), "image/png")],
            prompt="the two together",
            stream=True,
        )
    assert several.value.param == "image"


async def test_variations_keep_the_composition_and_change_the_details(image_oasis: Harness) -> None:
    client = image_oasis.sdk()
    source = scene()
    reply = await client.images.create_variation(
        image=("scene.png", png(source), "image/png"), n=3, size="256x256", response_format="b64_json"
    )
    variations = [pixels_of(base64.b64decode(item.b64_json or "")).astype(np.float32) for item in reply.data]
    assert len(variations) == 3
    for variation in variations:
        assert not np.array_equal(variation, source)
        # the left stays red and the right blue: composition and colours are the source's
        left, right = variation[85:170, 26:85].mean((0, 1)), variation[85:170, 171:230].mean((0, 1))
        assert left[0] > left[2] + 40, left
        assert right[2] > right[0] + 40, right
    assert not np.array_equal(variations[0], variations[1])


async def test_bad_uploads_are_400s_naming_the_part(image_oasis: Harness) -> None:
    client = image_oasis.sdk()
    good = png(scene())
    mask = png(np.zeros((256, 256, 4), dtype=np.uint8))
    cases: list[tuple[Any, str]] = [
        (client.images.edit(image=("a.png", b"GIF89a not a png", "image/png"), prompt="x"), "image"),
        (client.images.edit(image=("a.png", png(scene()[:, :200]), "image/png"), prompt="x"), "image"),
        (client.images.edit(image=("a.png", good, "image/png"), prompt="x"), "image"),  # no mask, no transparency
        (
            client.images.edit(
                image=("a.png", good, "image/png"),
                mask=("m.png", png(np.zeros((128, 128, 4), np.uint8)), "image/png"),
                prompt="x",
            ),
            "mask",
        ),
        (
            client.images.edit(
                image=("a.png", good, "image/png"),
                mask=("m.png", png(np.zeros((256, 256, 3), np.uint8)), "image/png"),
                prompt="x",
            ),
            "mask",
        ),
        (
            client.images.edit(
                image=("a.png", good, "image/png"), mask=("m.png", mask, "image/png"), prompt="x", size="1792x1024"
            ),
            "size",
        ),  # type: ignore[arg-type]
        (
            client.images.edit(image=("a.png", good, "image/png"), mask=("m.png", mask, "image/png"), prompt="x", n=11),
            "n",
        ),
        (
            client.images.edit(
                image=("a.png", good, "image/png"), mask=("m.png", mask, "image/png"), prompt="x", model="dall-e-3"
            ),
            "model",
        ),
        (client.images.create_variation(image=("a.png", b"\x89PNG\r\n\x1a\n broken", "image/png")), "image"),
        (client.images.create_variation(image=("a.png", good, "image/png"), size="64x64"), "size"),  # type: ignore[arg-type]
        (  # variations are square under every name, a model's own id too
            client.images.create_variation(
                model="oasis-shapes-32", image=("a.png", good, "image/png"), size="1792x1024"
            ),  # type: ignore[arg-type]
            "size",
        ),
        (
            client.images.create_variation(image=("a.png", good, "image/png"), response_format="gif"),  # type: ignore[arg-type]
            "response_format",
        ),
    ]
    for call, param in cases:
        error = await error_of(call)
        assert error.status_code == 400, (param, error)
        assert error.body["param"] == param, error.body  # type: ignore[index]

    # over 4 MB: noise does not compress
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1200, 4), dtype=np.uint8)
    big = png(noise)
    assert len(big) > 4 * 1024 * 1024
    too_large = await error_of(client.images.create_variation(image=("big.png", big, "image/png")))
    assert too_large.status_code == 400 and too_large.body["param"] == "image"  # type: ignore[index]

    async with image_oasis.http() as http:
        as_json = await http.post("/v1/images/edits", json={"prompt": "x"})
        missing_prompt = await http.post("/v1/images/edits", files={"image": ("a.png", good, "image/png")})
        missing_image = await http.post("/v1/images/variations", data={"n": "2"}, files={"x": ("a", b"a")})
        bad_n = await http.post("/v1/images/variations", data={"n": "two"}, files={"image": ("a.png", good)})
    assert as_json.status_code == 400 and as_json.json()["error"]["param"] == "image"
    assert missing_prompt.status_code == 400 and missing_prompt.json()["error"]["param"] == "prompt"
    assert missing_image.status_code == 400 and missing_image.json()["error"]["param"] == "image"
    assert bad_n.status_code == 400 and bad_n.json()["error"]["param"] == "n"


async def test_trns_transparency_marks_what_an_edit_redraws(image_oasis: Harness) -> None:
    client = image_oasis.sdk()
    from PIL import Image

    source = scene()
    keyed = Image.fromarray(source)  # RGB with a tRNS chunk: the white background is transparent
    buffer = io.BytesIO()
    keyed.save(buffer, format="PNG", transparency=(250, 250, 250))
    reply = await client.images.edit(
        image=("keyed.png", buffer.getvalue(), "image/png"), prompt="a star", size="256x256", response_format="b64_json"
    )
    edited = pixels_of(base64.b64decode(reply.data[0].b64_json or ""))
    red = np.all(source == (220, 30, 30), axis=-1)
    assert np.array_equal(edited[red], source[red])  # the opaque squares are kept


@pytest.mark.parametrize("file_format", ["jpeg", "webp"])
def test_every_output_compression_from_0_to_100_encodes(file_format: str) -> None:
    from oasis.services.images.pictures import Output, encoded_image

    for compression in (0, 1, 50, 100):
        assert pixels_of(encoded_image(scene(64), Output(file_format, compression))).shape == (64, 64, 3)
