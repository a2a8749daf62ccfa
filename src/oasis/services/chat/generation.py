"""One choice of a completion: tokens from the engine become text, cut at stop strings.

Shared by chat and completions so that both stream, stop and count the same way.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from oasis.engines.text import (
    EngineBusy,
    FinishReason,
    PromptTooLong,
    SampledToken,
    SamplingParams,
    TextEngine,
    TokenStream,
    UnusableSchema,
)
from oasis.errors import OasisError, invalid_request
from oasis.metrics import TIME_TO_FIRST_TOKEN, count_tokens, model_label
from oasis.protocol.extensions import ChatCompletionRequest, CompletionRequest
from oasis.services.models.engine_lookup import queue_full


@dataclass
class TextDelta:
    text: str
    tokens: list[SampledToken] = field(default_factory=list)
    finish_reason: FinishReason | None = None


@dataclass
class ChoiceText:
    text: str
    tokens: list[SampledToken]
    finish_reason: FinishReason
    completion_tokens: int


def _held_suffix(text: str, stops: Sequence[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-size:]):
                longest = size
                break
    return longest


async def stream_choice(generation: TokenStream, stops: Sequence[str] = ()) -> AsyncIterator[TextDelta]:
    """Yields text as it becomes final; the last delta carries finish_reason ("stop" also for a stop string).

    Text that might be the start of a stop string is held back until it is clearly not one, so a stop string
    never reaches the client, streamed or not.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    held = ""
    tokens: list[SampledToken] = []
    try:
        async for sampled in generation:
            tokens.append(sampled)
            held += decoder.decode(sampled.piece, final=sampled.finish_reason is not None)
            if stops:
                cut = min((i for i in (held.find(stop) for stop in stops) if i >= 0), default=-1)
                if cut >= 0:
                    yield TextDelta(held[:cut], tokens, "stop")
                    return
            if sampled.finish_reason is not None:
                yield TextDelta(held, tokens, sampled.finish_reason)
                return
            keep = _held_suffix(held, stops) if stops else 0
            ready = held[: len(held) - keep]
            if ready or not stops:
                yield TextDelta(ready, tokens)
                held = held[len(ready) :]
                tokens = []
    finally:
        await generation.aclose()  # frees the engine's slot when we stop early or the client leaves


async def complete_choice(generation: TokenStream, stops: Sequence[str] = ()) -> ChoiceText:
    parts: list[str] = []
    tokens: list[SampledToken] = []
    count = 0
    finish: FinishReason = "length"
    async for delta in stream_choice(generation, stops):
        parts.append(delta.text)
        tokens.extend(delta.tokens)
        if delta.finish_reason is not None:
            finish = delta.finish_reason
    count = len(tokens)
    return ChoiceText(text="".join(parts), tokens=tokens, finish_reason=finish, completion_tokens=count)


class _FirstTokenTimer:
    """Passes a stream through and records how long its first token took (time to first token)."""

    def __init__(self, inner: TokenStream, model: str) -> None:
        self._inner = inner
        self._model = model
        self._started: float | None = time.perf_counter()

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> SampledToken:
        sampled = await self._inner.__anext__()
        if self._started is not None:
            TIME_TO_FIRST_TOKEN.labels(model_label(self._model)).observe(time.perf_counter() - self._started)
            self._started = None
        return sampled

    @property
    def cached_prompt_tokens(self) -> int:
        return cached_prompt_tokens([self._inner])

    def cancel(self) -> None:
        self._inner.cancel()

    async def aclose(self) -> None:
        await self._inner.aclose()


def cached_prompt_tokens(streams: Sequence[TokenStream]) -> int:
    """Of a request's prompt, the tokens its engine read from a cache (OpenAI's `cached_tokens`): the least of its
    choices', since the choices after the first copy the prompt the first one read. An engine that keeps no
    cache reports none."""
    return min((getattr(stream, "cached_prompt_tokens", 0) for stream in streams), default=0)


def check_queue_holds(engine: TextEngine, sequences: int, param: str) -> None:
    """A 400 for a request that needs more sequences at once than the engine's queue can ever hold: a 429 would
    have the client (and a batch) retry it forever."""
    if sequences > engine.max_waiting:
        raise invalid_request(
            f"This request needs {sequences} sequences generated at once; this model's queue holds at most "
            f"{engine.max_waiting}. Send fewer prompts or ask for fewer choices.",
            param=param,
        )


def open_streams(
    engine: TextEngine, prompt: list[int], params: SamplingParams, n: int, *, model: str
) -> list[TokenStream]:
    """Starts n sequences at once, or none: if the engine refuses one, those already queued are cancelled.
    `model` (the configured id) labels the metrics."""
    return open_prompt_streams(engine, [prompt], params, n, model=model)[0]


def open_prompt_streams(
    engine: TextEngine, prompts: Sequence[list[int]], params: SamplingParams, n: int, *, model: str
) -> list[list[TokenStream]]:
    """n sequences for each prompt, all started or none (open_streams for several prompts)."""
    opened: list[list[TokenStream]] = []
    try:
        for prompt in prompts:
            streams: list[TokenStream] = []
            opened.append(streams)
            for choice in range(n):
                stream = engine.generate(prompt, choice_params(params, choice))
                streams.append(stream if streams else _FirstTokenTimer(stream, model))
    except BaseException as exc:
        for stream in (stream for streams in opened for stream in streams):
            stream.cancel()
        raise refusal(exc, model) from None
    return opened


def check_stream_options(request: ChatCompletionRequest | CompletionRequest) -> None:
    """OpenAI refuses `stream_options` on a request that does not stream."""
    if request.stream_options is not None and not request.stream:
        raise invalid_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.", param="stream_options"
        )


def choice_params(params: SamplingParams, choice: int) -> SamplingParams:
    """The sampling of a request's choice `choice`: with a seed, each choice draws from a seed of its own, made
    from the request's, so that the `n` choices (or `best_of` candidates) differ as OpenAI's do while the whole
    answer stays reproducible; choice 0 keeps the request's seed, so n=1 answers as before."""
    if params.seed is None or choice == 0:
        return params
    return replace(params, seed=(params.seed + choice * 0x9E37_79B9_7F4A_7C15) % (1 << 64))


def refusal(exc: BaseException, model: str) -> BaseException:
    """What the client is told when the engine refuses work: the OpenAI-shaped error for a full queue, a prompt
    past the context or an unusable schema; any other exception as it is."""
    if isinstance(exc, EngineBusy):
        return queue_full(model, exc)
    if isinstance(exc, PromptTooLong):
        return OasisError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, UnusableSchema):
        return OasisError(400, f"Invalid JSON Schema: {exc}", code="invalid_json_schema")
    return exc


def metered_usage(
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int | None = None,
    reasoning_tokens: int | None = None,
) -> dict[str, Any]:
    """The `usage` object of a response, counted in the token metrics of `model` (its configured id)."""
    count_tokens(model, prompt_tokens, completion_tokens)
    return usage(prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens)


def usage(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None, reasoning_tokens: int | None = None
) -> dict[str, Any]:
    """`cached_tokens`: of the prompt, those read from a cache (chat's `prompt_tokens_details`);
    `reasoning_tokens`: of the completion, those of the thinking (chat's `completion_tokens_details`)."""
    counts: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        counts["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    if reasoning_tokens is not None:
        counts["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return counts


Item = TypeVar("Item")


async def close_chunks(chunks: AsyncIterator[Any]) -> None:
    """Ends a stream of chunks now (its engine sequences freed), not when it is collected: every stream here is a
    generator, but its type says only iterator."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()


async def merge(sources: list[AsyncIterator[Item]]) -> AsyncIterator[tuple[int, Item]]:
    """Runs the choices' iterators side by side and yields their items as they come, tagged with the choice's
    position. One source is iterated directly: no task or queue on the per-token path of a single stream."""
    if len(sources) == 1:
        async with contextlib.aclosing(sources[0]) as only:  # type: ignore[type-var]
            async for item in only:
                yield 0, item
        return
    queue: asyncio.Queue[tuple[int, Item] | BaseException | None] = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async for item in sources[index]:
                await queue.put((index, item))
        except BaseException as exc:
            await queue.put(exc)
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(index)) for index in range(len(sources))]
    try:
        finished = 0
        while finished < len(tasks):
            entry = await queue.get()
            if entry is None:
                finished += 1
            elif isinstance(entry, BaseException):
                raise entry
            else:
                yield entry
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
