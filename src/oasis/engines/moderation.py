"""Moderation capability: OpenAI's 11 categories, scored from an embedding model's vectors of the text.

A moderation engine holds no text model of its own: the service embeds each window of the input with the
engine's `embedding_model` and the engine turns the vectors into one probability per category, with the threshold
above which that category is flagged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from oasis.engines.base import Engine

# In the order of OpenAI's reference; "sexual/minors" is scored by the service (see services/moderations).
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


class ImageUnreadable(ValueError):
    """An image the engine's image model cannot decode; `index` is its place in the list given."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index


@runtime_checkable
class ModerationEngine(Engine, Protocol):
    # The configured embedding model whose "query" vectors the engine reads; None: it embeds with its own encoder.
    embedding_model: str | None
    thresholds: Mapping[str, float]  # a category is flagged at or above its threshold
    image_categories: tuple[str, ...]  # the categories its image model scores (none: it reads text only)
    image_threshold: float

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        """(texts, len(CATEGORIES)) probabilities in [0, 1], one row per vector."""
        ...

    async def embed(self, texts: list[str]) -> np.ndarray:
        """The vectors `scores` reads, from the engine's own encoder (only where `embedding_model` is None).
        Raises EngineBusy when its queue is full."""
        ...

    async def image_scores(self, images: list[bytes]) -> np.ndarray:
        """(images, len(CATEGORIES)) probabilities; 0 outside `image_categories`. Raises ImageUnreadable."""
        ...


@runtime_checkable
class JudgeModerationEngine(Engine, Protocol):
    """Moderation by a chat model the user configured: the service sends each window of text to `judge_model` as
    the chat completion `judge_request` describes, and `read_verdict` turns the reply into category scores."""

    judge_model: str
    threshold: float  # every category is flagged at or above it
    window_words: int  # words per window of a long text
    max_windows: int  # judge calls one request may make
    concurrency: int  # judge calls one request has in flight at once

    def judge_request(self, text: str) -> dict[str, Any]:
        """The chat completion request for one window, without `model`."""
        ...

    def read_verdict(self, reply: dict[str, Any]) -> np.ndarray:
        """(len(CATEGORIES),) scores from the judge's chat completion; ValueError when it cannot be read."""
        ...
