"""POST /v1/moderations: each input's windows embedded together, scored per category, the highest window kept.

A long input is read as overlapping windows of WINDOW_WORDS words, each scored on its own, and a category's score
is its highest window's: one threatening sentence in a long benign text is still found, and nothing is cut off.
Up to MAX_INPUTS inputs per request are scored in one batched embedding call.

`sexual/minors` has no examples in the training set (the project does not write such text): it is the `sexual`
score where the text names a minor (MINOR_TERMS), and a fiftieth of it otherwise.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np

from oasis.engines.moderation import CATEGORIES, ModerationEngine
from oasis.engines.registry import EngineRegistry
from oasis.errors import invalid_request
from oasis.services.embeddings.service import EmbeddingService
from oasis.services.models.engine_lookup import engine_for, served_id

MAX_INPUTS = 32
WINDOW_WORDS = 64
WINDOW_STRIDE = 48  # windows overlap by 16 words, so a sentence cut by one is whole in the next
MAX_WINDOWS = 2048  # per request: about 98,000 words
MINOR_TERMS = re.compile(
    r"\b(child|children|kids?|minors?|under-?age|pre-?teens?|teens?|teenagers?|school ?(girl|boy)s?|toddlers?|"
    r"infants?|middle[- ]school(ers?)?|(1[0-7]|[1-9])[- ]?(years?|yrs?)[- ]?old|under ?18)\b",
    re.IGNORECASE,
)
_SEXUAL, _SEXUAL_MINORS = CATEGORIES.index("sexual"), CATEGORIES.index("sexual/minors")
_NOT_NAMING_A_MINOR = 0.02


def input_texts(raw: Any) -> list[str]:
    """`input` as texts: a string, a list of strings, or newer clients' list of typed parts (text only)."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise invalid_request("'$.input' is invalid: give a string or a non-empty list of strings.", param="input")
    if len(items) > MAX_INPUTS:
        raise invalid_request(
            f"'$.input' has {len(items)} items; at most {MAX_INPUTS} inputs per request.", param="input"
        )
    texts = []
    for index, item in enumerate(items):
        param = "input" if isinstance(raw, str) else f"input[{index}]"
        if isinstance(item, dict):
            if item.get("type") == "image_url":
                raise invalid_request(
                    f"'$.{param}' is an image; this server's moderation model reads text only.", param=param
                )
            if item.get("type") != "text" or not isinstance(item.get("text"), str):
                raise invalid_request(
                    f'\'$.{param}\' is invalid: a part is {{"type": "text", "text": "..."}}.', param=param
                )
            item = item["text"]
        if not isinstance(item, str):
            raise invalid_request(f"'$.{param}' is invalid: expected a string.", param=param)
        texts.append(item)
    return texts


def windows(text: str) -> Iterator[str]:
    words = text.split()
    if len(words) <= WINDOW_WORDS:
        yield text
        return
    for start in range(0, len(words) - WINDOW_WORDS + WINDOW_STRIDE, WINDOW_STRIDE):
        yield " ".join(words[start : start + WINDOW_WORDS])


def sexual_minors_score(text: str, sexual: float) -> float:
    return sexual * (1.0 if MINOR_TERMS.search(text) else _NOT_NAMING_A_MINOR)


class ModerationService:
    def __init__(self, registry: EngineRegistry, embeddings: EmbeddingService) -> None:
        self._registry = registry
        self._embeddings = embeddings

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model") or "text-moderation-latest"
        if not isinstance(model, str):
            raise invalid_request("'$.model' is invalid: expected a string.", param="model")
        if "input" not in body:
            raise invalid_request("'$.input' is required.", param="input")
        texts = input_texts(body["input"])
        engine: ModerationEngine = engine_for(self._registry, model, ModerationEngine, "moderation")
        spans: list[tuple[int, int]] = []
        pieces: list[str] = []
        for text in texts:
            start = len(pieces)
            pieces.extend(windows(text) if text.strip() else [text or " "])
            spans.append((start, len(pieces)))
        if len(pieces) > MAX_WINDOWS:
            raise invalid_request(
                f"'$.input' is too long: {len(pieces)} windows of {WINDOW_WORDS} words; at most {MAX_WINDOWS} per "
                "request.",
                param="input",
            )
        embedded = await self._embeddings.embed(engine.embedding_model, pieces, "query", param="input")
        window_scores = engine.scores(embedded.vectors)
        results = []
        for text, (start, end) in zip(texts, spans, strict=True):
            scores = window_scores[start:end].max(axis=0)
            scores[_SEXUAL_MINORS] = sexual_minors_score(text, float(scores[_SEXUAL]))
            results.append(_result(scores, engine))
        return {"id": f"modr-{secrets.token_hex(12)}", "model": served_id(self._registry, model), "results": results}


def _result(scores: np.ndarray, engine: ModerationEngine) -> dict[str, Any]:
    thresholds = dict(engine.thresholds)
    thresholds["sexual/minors"] = thresholds["sexual"]
    category_scores = {name: float(score) for name, score in zip(CATEGORIES, scores, strict=True)}
    categories = {name: category_scores[name] >= thresholds[name] for name in CATEGORIES}
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": category_scores,
        "category_applied_input_types": {name: ["text"] for name in CATEGORIES},
    }
