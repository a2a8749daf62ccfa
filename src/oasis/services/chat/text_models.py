"""Finding the text engine behind a model name, and the limits every generation request shares."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any, cast

from pydantic import BaseModel

from oasis.engines.forwarding import ForwardingEngine
from oasis.engines.registry import EngineRegistry
from oasis.engines.text import SampledToken, TextEngine
from oasis.errors import OasisError, invalid_request
from oasis.services.models.engine_lookup import engine_for, implements, loaded_engine

MAX_STOPS = 4


def forwarding_engine(registry: EngineRegistry, model: str) -> ForwardingEngine | None:
    """The upstream engine behind `model`, when the model is routed to another server."""
    engine = loaded_engine(registry, model)
    return cast(ForwardingEngine, engine) if implements(engine, ForwardingEngine) else None


def forwarded_body(request: BaseModel) -> dict[str, Any]:
    """What the client sent, unknown fields included at every depth (vLLM's top_k, a tool's `strict`), for the
    upstream to judge."""
    sent = getattr(request, "sent", None)
    if isinstance(sent, dict):
        return dict(sent)
    return request.model_dump(mode="json", by_alias=True, exclude_unset=True)


async def forward_whole(engine: ForwardingEngine, path: str, request: BaseModel, model: str) -> dict[str, Any]:
    reply = await engine.forward(path, forwarded_body(request))
    return {**reply, "model": model}


async def forward_stream(
    engine: ForwardingEngine, path: str, request: BaseModel, model: str
) -> AsyncIterator[dict[str, Any]]:
    # closed with this generator, so that a reader stopping early frees the upstream connection at once
    async with contextlib.aclosing(engine.forward_stream(path, forwarded_body(request))) as events:
        async for event in events:
            yield {**event, "model": model}


def text_engine(registry: EngineRegistry, model: str, *, purpose: str) -> TextEngine:
    engine: TextEngine = engine_for(registry, model, TextEngine, purpose)
    return engine


def stop_list(stop: str | Sequence[str] | None) -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS:
        raise invalid_request(f"'stop' takes at most {MAX_STOPS} sequences, got {len(stops)}.", param="stop")
    return [s for s in stops if s]


_TOKEN_ID = re.compile(r"-?[0-9]{1,12}")


def token_biases(engine: TextEngine, logit_bias: dict[str, int] | None) -> dict[int, float]:
    biases: dict[int, float] = {}
    for key, value in (logit_bias or {}).items():
        if not _TOKEN_ID.fullmatch(key):  # str.isdigit takes "²", and lstrip("-") took "--5": int() failed on both
            raise invalid_request(f"logit_bias keys must be token ids, got {key!r}.", param="logit_bias")
        if not -100 <= value <= 100:
            raise invalid_request("logit_bias values must be between -100 and 100.", param="logit_bias")
        if not engine.is_valid_token(int(key)):  # the draw would index past the vocabulary, or wrap around it
            raise invalid_request(
                f"Invalid key in 'logit_bias': {key} is not a token of this model.", param="logit_bias"
            )
        biases[int(key)] = float(value)
    return biases


def completion_budget(
    engine: TextEngine, prompt_tokens: int, requested: int | None, param: str, prompt_param: str = "messages"
) -> int:
    """max_tokens as OpenAI means it: what was asked, else whatever room the context leaves. `prompt_param` is
    the field the prompt came in (`prompt` for legacy completions)."""
    room = engine.context_length - prompt_tokens
    if room <= 0 or (requested is not None and requested > room):
        asked = f" plus {requested} completion tokens" if requested is not None else ""
        raise OasisError(
            400,
            f"This model's maximum context length is {engine.context_length} tokens. However, you requested "
            f"{prompt_tokens + (requested or 0)} tokens ({prompt_tokens} in the {prompt_param}{asked}). Please "
            f"reduce the length of the {prompt_param} or completion.",
            param=param if requested is not None and room > 0 else prompt_param,
            code="context_length_exceeded",
        )
    return room if requested is None else requested


def token_text(engine: TextEngine, token: SampledToken | int) -> tuple[str, bytes]:
    piece = engine.token_piece(token.token if isinstance(token, SampledToken) else token)
    return piece.decode("utf-8", errors="replace"), piece
