"""POST /v1/embeddings: checks the input against the model's limits, embeds, shapes vectors as asked."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np

from oasis.engines.embedding import EmbeddingEngine, TextRole
from oasis.engines.registry import EngineRegistry
from oasis.engines.text import EngineBusy
from oasis.errors import invalid_request
from oasis.metrics import count_tokens
from oasis.protocol import openapi_types as spec
from oasis.protocol.lone_surrogates import is_lone
from oasis.services.embeddings import openai_tokens
from oasis.services.models.engine_lookup import engine_for, queue_full, served_id

MAX_INPUTS = 2048


@dataclass(frozen=True)
class Embedded:
    vectors: np.ndarray
    prompt_tokens: int


def input_texts(raw: Any) -> list[str]:
    """The request's `input` as texts: token ids (OpenAI's cl100k_base) are decoded first."""
    if isinstance(raw, str):
        items: list[Any] = [raw]
    elif raw and all(isinstance(token, int) for token in raw):
        items = [list(raw)]
    else:
        items = [getattr(item, "root", item) for item in raw]
    if not items:
        raise invalid_request("'$.input' is invalid: it must not be an empty list.", param="input")
    if len(items) > MAX_INPUTS:
        raise invalid_request(f"'$.input' is too long: at most {MAX_INPUTS} inputs per request.", param="input")
    texts = []
    for index, item in enumerate(items):
        param = "input" if len(items) == 1 else f"input[{index}]"
        text = item if isinstance(item, str) else openai_tokens.decode(item, param)
        if not text:
            raise invalid_request(f"'$.{param}' is invalid: it must not be an empty string.", param=param)
        texts.append(unicode_text(text, param))
    return texts


def unicode_text(text: str, param: str) -> str:
    """`text`, or a 400 naming `param` when it holds a lone surrogate (valid JSON, but no text a model can read)."""
    if is_lone(text):
        raise invalid_request(f"'$.{param}' is not valid Unicode (a lone surrogate).", param=param)
    return text


def shaped(vectors: np.ndarray, dimensions: int | None, model: str) -> np.ndarray:
    """Truncates to `dimensions` and re-normalises, as text-embedding-3 does (Matryoshka-style)."""
    size = vectors.shape[1]
    if dimensions is None or dimensions == size:
        return vectors
    if dimensions > size:
        raise invalid_request(
            f"This model ({model}) returns at most {size} dimensions; you asked for {dimensions}.",
            param="dimensions",
        )
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return (cut / np.maximum(norms, 1e-12)).astype(np.float32)


class EmbeddingService:
    def __init__(self, registry: EngineRegistry) -> None:
        self._registry = registry

    def engine(self, model: str) -> EmbeddingEngine:
        found: EmbeddingEngine = engine_for(self._registry, model, EmbeddingEngine, "embeddings")
        return found

    async def embed(self, model: str, texts: list[str], role: TextRole, *, param: str = "input") -> Embedded:
        """Embeds with a check of every text against the model's input limit (a 400 naming the limit)."""
        engine = self.engine(model)
        counts = await engine.count_tokens(texts, role)
        for index, count in enumerate(counts):
            if count > engine.max_input_tokens:
                where = param if len(texts) == 1 else f"{param}[{index}]"
                raise invalid_request(
                    f"This model's maximum context length is {engine.max_input_tokens} tokens, however you "
                    f"requested {count} tokens in '{where}'. Please reduce the length of the input.",
                    param=where,
                )
        try:
            vectors = await engine.embed(texts, role)
        except EngineBusy as busy:
            raise queue_full(served_id(self._registry, model), busy) from None
        return Embedded(vectors, sum(counts))

    async def create(self, body: spec.CreateEmbeddingRequest) -> dict[str, Any]:
        texts = input_texts(body.input)
        # Clients embed documents and questions through the same call; E5 asks for "query: " in that case.
        embedded = await self.embed(body.model, texts, "query")
        vectors = shaped(embedded.vectors, body.dimensions, body.model)
        as_base64 = body.encoding_format == "base64"
        data = [
            {
                "object": "embedding",
                "index": index,
                "embedding": _base64(row) if as_base64 else row.tolist(),
            }
            for index, row in enumerate(vectors)
        ]
        count_tokens(served_id(self._registry, body.model), embedded.prompt_tokens, 0)
        usage = {"prompt_tokens": embedded.prompt_tokens, "total_tokens": embedded.prompt_tokens}
        return {"object": "list", "data": data, "model": body.model, "usage": usage}


def _base64(row: np.ndarray) -> str:
    return base64.b64encode(row.astype("<f4").tobytes()).decode("ascii")
