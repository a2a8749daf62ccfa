"""POST /v1/moderations: each input's windows embedded together, scored per category, the highest window kept.

`input` is a string (one input), a list of strings (one input each), or a list of typed parts (text and
image_url), which together make ONE input, as OpenAI's omni-moderation reads them: its result says in
`category_applied_input_types` which kinds of part each category was scored on.

A long text is read as overlapping windows of WINDOW_WORDS words, each scored on its own, and a category's score is
its highest window's: one threatening sentence in a long benign text is still found, and nothing is cut off. Up to
MAX_INPUTS inputs (or parts) per request are scored in one batched embedding call. Images (data URLs; this server
fetches nothing) are scored by the engine's image model where it has one, for the categories it reads.

A `llm-judge` model sends each window (of its own, longer size) to the chat model it names, all at once, and
reads the verdicts; it reads text only.

`sexual/minors` has no examples in the training set (the project does not write such text): it is the `sexual`
score of each window that names a minor (MINOR_TERMS, English words only), and a fiftieth of it otherwise.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oasis.engines.moderation import CATEGORIES, ImageUnreadable, JudgeModerationEngine, ModerationEngine
from oasis.engines.registry import EngineRegistry
from oasis.engines.text import EngineBusy
from oasis.errors import OasisError, invalid_request
from oasis.protocol.extensions import ChatCompletionRequest
from oasis.services.embeddings.service import EmbeddingService, unicode_text
from oasis.services.images.pictures import data_url_bytes
from oasis.services.models.engine_lookup import implements, loaded_engine, queue_full, served_id

ChatCall = Callable[[ChatCompletionRequest], Coroutine[Any, Any, dict[str, Any]]]

MAX_INPUTS = 32
MAX_IMAGE_BYTES = 20 * 1024 * 1024
WINDOW_WORDS = 64
WINDOW_CHARS = 400  # about 100-200 tokens whatever the script: well inside the embedding model's 512
LONG_WORD_CHARS = 100
MAX_WINDOWS = 2048  # per request: about 98,000 words
MINOR_TERMS = re.compile(  # English only; "minor" alone is left out ("a minor injury", "A minor")
    r"\b(child|children|kids?|minors|under-?age|pre-?teens?|teens?|teenagers?|school ?(girl|boy)s?|toddlers?|"
    r"infants?|middle[- ]school(ers?)?|(1[0-7]|[1-9])[- ]?(years?|yrs?)[- ]?old|under ?18)\b",
    re.IGNORECASE,
)
_SEXUAL, _SEXUAL_MINORS = CATEGORIES.index("sexual"), CATEGORIES.index("sexual/minors")
_NOT_NAMING_A_MINOR = 0.02


@dataclass
class ModerationInput:
    texts: list[str] = field(default_factory=list)
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (param, the image file's bytes)


def read_inputs(raw: Any) -> list[ModerationInput]:
    """`input` as the inputs to score: a string, a list of strings, or one input made of typed parts."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise invalid_request("'$.input' is invalid: give a string or a non-empty list.", param="input")
    if len(items) > MAX_INPUTS:
        raise invalid_request(f"'$.input' has {len(items)} items; at most {MAX_INPUTS} per request.", param="input")
    if isinstance(raw, str):
        return [ModerationInput(texts=[unicode_text(raw, "input")])]
    if all(isinstance(item, str) for item in items):
        return [ModerationInput(texts=[unicode_text(item, f"input[{i}]")]) for i, item in enumerate(items)]
    combined = ModerationInput()
    for index, item in enumerate(items):
        param = f"input[{index}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text" and isinstance(item.get("text"), str):
            combined.texts.append(unicode_text(item["text"], f"{param}.text"))
        elif kind == "image_url" and isinstance(item.get("image_url"), dict):
            combined.images.append((param, _image_bytes(item["image_url"].get("url"), f"{param}.image_url.url")))
        else:
            raise invalid_request(
                f'\'$.{param}\' is invalid: give strings, or parts {{"type": "text", "text": ...}} and '
                '{"type": "image_url", "image_url": {"url": ...}}, not a mix.',
                param=param,
            )
    return [combined]


def _image_bytes(url: Any, param: str) -> bytes:
    return data_url_bytes(url, param, f"'$.{param}'", MAX_IMAGE_BYTES)


def windows(text: str, max_words: int = WINDOW_WORDS, max_chars: int = WINDOW_CHARS) -> Iterator[str]:
    """Overlapping windows of at most `max_words` words and `max_chars` characters; a run of text without spaces
    (Chinese, Japanese, Thai, a long URL) is cut into pieces of LONG_WORD_CHARS first."""
    units = [
        word[start : start + LONG_WORD_CHARS] for word in text.split() for start in range(0, len(word), LONG_WORD_CHARS)
    ]
    if not units:
        yield text or " "
        return
    start = 0
    while True:
        end, length = start, 0
        while end < len(units) and end - start < max_words and (end == start or length + len(units[end]) < max_chars):
            length += len(units[end]) + 1
            end += 1
        yield " ".join(units[start:end])
        if end >= len(units):
            return
        start += max(1, (end - start) * 3 // 4)  # a quarter of each window is read again by the next


def sexual_minors_score(text: str, sexual: float) -> float:
    return sexual * (1.0 if MINOR_TERMS.search(text) else _NOT_NAMING_A_MINOR)


def _split(inputs: list[ModerationInput], max_words: int, max_chars: int) -> tuple[list[str], list[tuple[int, int]]]:
    """Every input's windows in one list, and the span of the list each input owns."""
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    for moderation_input in inputs:
        start = len(pieces)
        for text in moderation_input.texts:
            pieces.extend(windows(text, max_words, max_chars))
        spans.append((start, len(pieces)))
    return pieces, spans


def _judge_failure(judge_model: str, failures: BaseExceptionGroup[BaseException]) -> OasisError:
    """The one error a client sees when judge calls failed: the judge's own where it gave one (busy, loading,
    upstream down), a 500 where the judge refused the request oasis wrote, a 502 for anything else."""
    errors = [error for error in _leaves(failures) if isinstance(error, OasisError)]
    if not errors:
        return OasisError(
            502,
            f"The moderation judge '{judge_model}' failed: {_leaves(failures)[0]!r}",
            type="server_error",
            code="model_failed",
        )
    first = errors[0]
    if first.status in (400, 404):  # about the judge's request, which the client did not write
        return _misconfigured(f"its judge_model '{judge_model}' refused: {first.message}")
    return first


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return found


def _misconfigured(reason: str) -> OasisError:
    return OasisError(500, f"The moderation model is misconfigured: {reason}", type="server_error", code="model_failed")


class ModerationService:
    def __init__(self, registry: EngineRegistry, embeddings: EmbeddingService, chat: ChatCall) -> None:
        self._registry = registry
        self._embeddings = embeddings
        self._chat = chat

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model") or "text-moderation-latest"
        if not isinstance(model, str):
            raise invalid_request("'$.model' is invalid: expected a string.", param="model")
        if "input" not in body:
            raise invalid_request("'$.input' is required.", param="input")
        inputs = read_inputs(body["input"])
        engine = self._engine(model)
        if implements(engine, JudgeModerationEngine):
            results = await self._judged(engine, inputs)
        else:
            results = await self._scored(model, engine, inputs)
        return {"id": f"modr-{secrets.token_hex(12)}", "model": served_id(self._registry, model), "results": results}

    def served_model(self, model: str) -> str:
        """The served id of a model that moderates: a moderation with nothing to score still names it, and an
        unknown one is an error before anything else is done."""
        self._engine(model)
        return served_id(self._registry, model)

    def _engine(self, model: str) -> Any:
        engine: Any = loaded_engine(self._registry, model)
        if not implements(engine, JudgeModerationEngine) and not implements(engine, ModerationEngine):
            raise invalid_request(f"The model '{model}' does not do moderation.", param="model")
        return engine

    async def _scored(
        self, model: str, engine: ModerationEngine, inputs: list[ModerationInput]
    ) -> list[dict[str, Any]]:
        """The embedding head's way: every window embedded in one call and scored per category."""
        pieces, spans = _split(inputs, WINDOW_WORDS, WINDOW_CHARS)
        if len(pieces) > MAX_WINDOWS:
            raise invalid_request(
                f"'$.input' is too long: {len(pieces)} windows of {WINDOW_WORDS} words; at most {MAX_WINDOWS} per "
                "request.",
                param="input",
            )
        window_scores = np.zeros((0, len(CATEGORIES)), dtype=np.float32)
        if pieces:
            if engine.embedding_model is None:  # its own encoder; windows are far inside its input limit
                try:
                    vectors = await engine.embed(pieces)
                except EngineBusy as busy:
                    raise queue_full(served_id(self._registry, model), busy) from None
            else:
                vectors = (await self._embeddings.embed(engine.embedding_model, pieces, "query", param="input")).vectors
            try:
                window_scores = engine.scores(vectors)
            except ValueError as exc:  # the configured embedding model is not the one the head was trained on
                raise _misconfigured(str(exc)) from None
        thresholds = dict(engine.thresholds)
        thresholds["sexual/minors"] = thresholds["sexual"]
        results = []
        for moderation_input, (start, end) in zip(inputs, spans, strict=True):
            text_scores = None
            if end > start:
                scores = window_scores[start:end].copy()
                # per window: a minor named in the same window as the sexual content, not anywhere in a long text
                scores[:, _SEXUAL_MINORS] = [
                    sexual_minors_score(piece, float(sexual))
                    for piece, sexual in zip(pieces[start:end], scores[:, _SEXUAL], strict=True)
                ]
                text_scores = scores.max(axis=0)
            image_scores = await self._image_scores(engine, moderation_input.images)
            results.append(
                _result(text_scores, image_scores, thresholds, engine.image_categories, engine.image_threshold)
            )
        return results

    async def _judged(self, engine: JudgeModerationEngine, inputs: list[ModerationInput]) -> list[dict[str, Any]]:
        """A chat model's way: each window is one chat completion, all sent at once; a category's score is its
        highest window's."""
        for moderation_input in inputs:
            if moderation_input.images:
                param = moderation_input.images[0][0]
                raise invalid_request(f"'$.{param}' is an image; this moderation model reads text only.", param=param)
        pieces, spans = _split(inputs, engine.window_words, engine.window_words * 8)
        if len(pieces) > engine.max_windows:
            raise invalid_request(
                f"'$.input' is too long: {len(pieces)} windows of {engine.window_words} words; this moderation model "
                f"reads at most {engine.max_windows} per request.",
                param="input",
            )
        if self._registry.resolve(engine.judge_model) is None:
            raise _misconfigured(f"its judge_model '{engine.judge_model}' is not a configured model.")
        places = asyncio.Semaphore(engine.concurrency)  # a long text must not fill the judge's queue alone

        async def judge(piece: str) -> dict[str, Any]:
            async with places:
                body = {"model": engine.judge_model, **engine.judge_request(piece)}
                return await self._chat(ChatCompletionRequest.model_validate(body))

        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the other calls
                calls = [group.create_task(judge(piece)) for piece in pieces]
        except BaseExceptionGroup as failures:
            raise _judge_failure(engine.judge_model, failures) from None
        try:
            window_scores = np.stack([engine.read_verdict(call.result()) for call in calls])
        except ValueError as exc:
            raise OasisError(
                502,
                f"The moderation judge '{engine.judge_model}' answered in a form it cannot be read in: {exc}",
                type="server_error",
                code="model_failed",
            ) from None
        thresholds = dict.fromkeys(CATEGORIES, engine.threshold)
        return [_result(window_scores[start:end].max(axis=0), None, thresholds, (), 1.0) for start, end in spans]

    async def _image_scores(self, engine: ModerationEngine, images: list[tuple[str, bytes]]) -> np.ndarray | None:
        if not images:
            return None
        if not engine.image_categories:
            raise invalid_request(
                f"'$.{images[0][0]}' is an image; this moderation model reads text only.", param=images[0][0]
            )
        try:
            return (await engine.image_scores([data for _, data in images])).max(axis=0)
        except ImageUnreadable as exc:
            param = images[exc.index][0]
            raise invalid_request(f"'$.{param}' is not an image this server can read: {exc}", param=param) from None


def _result(
    text: np.ndarray | None,
    image: np.ndarray | None,
    thresholds: Mapping[str, float],
    image_categories: tuple[str, ...],
    image_threshold: float,
) -> dict[str, Any]:
    category_scores, categories, applied = {}, {}, {}
    for column, name in enumerate(CATEGORIES):
        kinds, scores, flagged = [], [], False
        if text is not None:
            kinds.append("text")
            scores.append(float(text[column]))
            flagged = flagged or float(text[column]) >= thresholds[name]
        if image is not None and name in image_categories:
            kinds.append("image")
            scores.append(float(image[column]))
            flagged = flagged or float(image[column]) >= image_threshold
        category_scores[name] = max(scores, default=0.0)
        categories[name] = flagged
        applied[name] = kinds
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": category_scores,
        "category_applied_input_types": applied,
    }
