"""Text embedding capability: texts in, L2-normalised float32 vectors out."""

from __future__ import annotations

from typing import Literal, Protocol, runtime_checkable

import numpy as np

from oasis.engines.base import Engine

# Retrieval models embed a question and the passage that answers it differently (E5's "query: " and
# "passage: " prefixes); symmetric models ignore the difference.
TextRole = Literal["query", "passage"]


@runtime_checkable
class EmbeddingEngine(Engine, Protocol):
    dimensions: int
    max_input_tokens: int

    async def count_tokens(self, texts: list[str], role: TextRole) -> list[int]:
        """How many tokens the model reads for each text, special tokens included."""
        ...

    async def embed(self, texts: list[str], role: TextRole) -> np.ndarray:
        """One unit-length float32 row per text. Calls from concurrent requests are batched together."""
        ...
