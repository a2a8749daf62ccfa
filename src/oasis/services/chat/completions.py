"""Legacy completions: prompts as text or token ids, echo, suffix (fill-in-the-middle), best_of, and the
legacy logprobs shape (tokens, token_logprobs, top_logprobs, text_offset) that lm-evaluation-harness reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from oasis.engines.registry import EngineRegistry
from oasis.engines.text import SampledToken, SamplingParams, TextEngine, TokenStream
from oasis.errors import OasisError, invalid_request
from oasis.metrics import count_tokens
from oasis.protocol.extensions import CompletionRequest
from oasis.services.chat.generation import (
    ChoiceText,
    check_queue_holds,
    check_stream_options,
    complete_choice,
    merge,
    metered_usage,
    open_prompt_streams,
    open_streams,
    refusal,
    stream_choice,
    usage,
)
from oasis.services.chat.text_models import (
    completion_budget,
    forward_stream,
    forward_whole,
    forwarding_engine,
    stop_list,
    text_engine,
    token_biases,
    token_text,
)
from oasis.services.models.engine_lookup import served_id
from oasis.storage.clock import new_id

DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint, unlike chat


@dataclass(frozen=True)
class Prompt:
    tokens: list[int]
    text: str


@dataclass(frozen=True)
class PreparedCompletion:
    engine: TextEngine
    model_id: str  # the configured id behind the requested name, for the metrics
    prompts: list[Prompt]
    params: SamplingParams
    stops: list[str]
    n: int
    best_of: int
    echo: bool
    logprobs: int | None


def _prompts(engine: TextEngine, request: CompletionRequest) -> list[Prompt]:
    raw = request.prompt
    items: list[Any]
    if isinstance(raw, str):
        items = [raw]
    elif raw and all(isinstance(item, int) for item in raw):
        items = [list(raw)]
    else:
        items = [getattr(item, "root", item) for item in raw]
    if not items:
        raise invalid_request("'prompt' must not be empty.", param="prompt")
    prompts = []
    for item in items:
        if isinstance(item, str):
            tokens = engine.tokenize(item, add_special=True, parse_special=False)
            prompts.append(
                Prompt(tokens or engine.tokenize(engine.special_tokens["eos_token"], parse_special=True), item)
            )
        else:
            bad = [token for token in item if not engine.is_valid_token(token)]
            if bad or not item:
                raise invalid_request(f"Invalid token ids in 'prompt': {bad[:5] or 'empty list'}.", param="prompt")
            prompts.append(Prompt(list(item), engine.detokenize(list(item))))
    return prompts


def _with_suffix(engine: TextEngine, prompt: Prompt, suffix: str | None) -> Prompt:
    if not suffix:
        return prompt
    fim = engine.fim_tokens
    if fim is None:
        raise invalid_request(
            "This model does not do fill-in-the-middle, so 'suffix' is not supported.", param="suffix"
        )
    prefix_id, suffix_id, middle_id = fim
    body = engine.tokenize(prompt.text, add_special=False) if prompt.text else []
    tail = engine.tokenize(suffix, add_special=False)
    return Prompt([prefix_id, *body, suffix_id, *tail, middle_id], prompt.text)


def to_sampling_params(request: CompletionRequest, engine: TextEngine, longest_prompt: int) -> SamplingParams:
    requested = DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens
    if not requested and longest_prompt > engine.context_length:  # scoring only: the prompt itself must fit
        raise OasisError(
            400,
            f"This model's maximum context length is {engine.context_length} tokens. However, your prompt has "
            f"{longest_prompt} tokens. Please reduce the length of the prompt.",
            param="prompt",
            code="context_length_exceeded",
        )
    wants_logprobs = request.logprobs is not None or (
        "best_of" in request.model_fields_set and (request.best_of or 1) > 1
    )
    return SamplingParams(
        max_tokens=completion_budget(engine, longest_prompt, requested, "max_tokens", "prompt") if requested else 0,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        logit_bias=token_biases(engine, request.logit_bias),
        seed=request.seed,
        ignore_eos=bool((request.model_extra or {}).get("ignore_eos", False)),
        # best_of ranks candidates by mean log probability, so it needs them even when the client does not.
        top_logprobs=(request.logprobs or 0) if wants_logprobs else None,
    )


# Prompts with more text than this are tokenized off the event loop.
PREPARE_INLINE_CHARS = 64 * 1024


class CompletionService:
    def __init__(self, registry: EngineRegistry, fingerprint: str) -> None:
        self._registry = registry
        self._fingerprint = fingerprint

    def prepare(self, request: CompletionRequest) -> PreparedCompletion:
        check_stream_options(request)
        engine = text_engine(self._registry, request.model, purpose="completions")
        n = request.n or 1
        best_of = (request.best_of or n) if "best_of" in request.model_fields_set else n
        if best_of < n:
            raise invalid_request("'best_of' must be greater than or equal to 'n'.", param="best_of")
        if request.stream and best_of > n:
            raise invalid_request("'best_of' cannot be used with 'stream'.", param="best_of")
        if request.max_tokens == 0 and not request.echo:
            raise invalid_request(
                "'max_tokens' 0 only makes sense with 'echo' (scoring the prompt).", param="max_tokens"
            )
        prompts = [_with_suffix(engine, prompt, request.suffix) for prompt in _prompts(engine, request)]
        # Every prompt's sequences are queued at once: best_of generating (none with max_tokens 0), and one to
        # score the prompt for echo with logprobs: before them when whole, beside them when streamed.
        generating = 0 if request.max_tokens == 0 else best_of
        scoring = 1 if request.echo and request.logprobs is not None else 0
        per_prompt = generating + scoring if request.stream else max(generating, scoring)
        check_queue_holds(
            engine, len(prompts) * per_prompt, "prompt" if len(prompts) > 1 else ("best_of" if best_of > n else "n")
        )
        return PreparedCompletion(
            engine=engine,
            model_id=served_id(self._registry, request.model),
            prompts=prompts,
            params=to_sampling_params(request, engine, max(len(p.tokens) for p in prompts)),
            stops=stop_list(request.stop),
            n=n,
            best_of=best_of,
            echo=bool(request.echo),
            logprobs=request.logprobs,
        )

    def _envelope(self, request: CompletionRequest) -> dict[str, Any]:
        return {
            "id": new_id("cmpl-"),
            "object": "text_completion",
            "created": int(time.time()),
            "model": request.model,
            "system_fingerprint": self._fingerprint,
        }

    async def prepared(self, request: CompletionRequest) -> PreparedCompletion | None:
        """The request checked and tokenized for its local engine (None for an upstream one); in a thread when
        the prompts are long, so that tokenizing megabytes does not stall every stream the event loop serves."""
        if not self._registry.configured(request.model) or forwarding_engine(self._registry, request.model):
            return None  # upstream; or a fine-tune, which may be unloaded meanwhile: create and stream prepare it
        prompt = request.prompt
        size = len(prompt) if isinstance(prompt, str) else sum(len(p) for p in prompt if isinstance(p, str))
        if size > PREPARE_INLINE_CHARS:
            return await asyncio.to_thread(self.prepare, request)
        return self.prepare(request)

    async def create(self, request: CompletionRequest, prepared: PreparedCompletion | None = None) -> dict[str, Any]:
        upstream = forwarding_engine(self._registry, request.model)
        if upstream is not None:
            return await forward_whole(upstream, "/completions", request, request.model)
        job = prepared or self.prepare(request)
        work = [asyncio.ensure_future(self._choices_for(job, prompt)) for prompt in job.prompts]
        try:
            per_prompt = await asyncio.gather(*work)
        except BaseException:
            # One prompt refused (a full queue) or failed: gather leaves the others running, unread, to the end.
            for task in work:
                task.cancel()
            raise
        choices = []
        completion_tokens = 0
        for prompt_index, (prompt, (generated, scored)) in enumerate(zip(job.prompts, per_prompt, strict=True)):
            completion_tokens += sum(result.completion_tokens for result in generated)
            ranked = sorted(generated, key=_mean_logprob, reverse=True)[: job.n] if job.best_of > job.n else generated
            for offset, result in enumerate(ranked):
                choices.append(self._choice(job, prompt, result, scored, prompt_index * job.n + offset))
        prompt_tokens = sum(len(prompt.tokens) for prompt in job.prompts)
        return {
            **self._envelope(request),
            "choices": choices,
            "usage": metered_usage(job.model_id, prompt_tokens, completion_tokens),
        }

    async def _choices_for(
        self, job: PreparedCompletion, prompt: Prompt
    ) -> tuple[list[ChoiceText], list[SampledToken]]:
        scored: list[SampledToken] = []
        if job.echo and job.logprobs is not None:
            try:
                scored = await job.engine.score(prompt.tokens, job.logprobs)
            except Exception as exc:
                raise refusal(exc, job.model_id) from None
        if job.params.max_tokens == 0:
            return [ChoiceText("", [], "length", 0) for _ in range(job.n)], scored
        streams = open_streams(job.engine, prompt.tokens, job.params, job.best_of, model=job.model_id)
        try:
            generated = await asyncio.gather(*(complete_choice(stream, job.stops) for stream in streams))
        finally:
            for stream in streams:
                stream.cancel()
        return list(generated), scored

    def _choice(
        self, job: PreparedCompletion, prompt: Prompt, result: ChoiceText, scored: list[SampledToken], index: int
    ) -> dict[str, Any]:
        text = (prompt.text if job.echo else "") + result.text
        logprobs = None
        if job.logprobs is not None:
            logprobs = _legacy_logprobs(job, prompt, result.tokens, scored)
        return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": result.finish_reason}

    def stream(
        self, request: CompletionRequest, prepared: PreparedCompletion | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Validates and queues now (errors keep their HTTP status), then returns the chunks."""
        upstream = forwarding_engine(self._registry, request.model)
        if upstream is not None:
            return forward_stream(upstream, "/completions", request, request.model)
        job = prepared or self.prepare(request)
        prompts = [prompt.tokens for prompt in job.prompts]
        streams: list[list[TokenStream | None]]
        if job.params.max_tokens == 0:  # the prompt only (scored with echo and logprobs): nothing to generate
            streams = [[None] * job.n for _ in prompts]
        else:
            opened = open_prompt_streams(job.engine, prompts, job.params, job.n, model=job.model_id)
            streams = [list[TokenStream | None](per_prompt) for per_prompt in opened]
        return self._chunks(request, job, streams)

    async def _chunks(
        self, request: CompletionRequest, job: PreparedCompletion, streams: list[list[TokenStream | None]]
    ) -> AsyncIterator[dict[str, Any]]:
        envelope = self._envelope(request)
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        extra: dict[str, Any] = {"usage": None} if include_usage else {}
        completion_tokens = 0
        prompt_tokens = sum(len(prompt.tokens) for prompt in job.prompts)
        flat = [(p, stream) for p, per_prompt in enumerate(streams) for stream in per_prompt]
        # Each prompt is scored once (echo with logprobs), however many choices show it.
        scoring = (
            {p: asyncio.ensure_future(self._scored(job, prompt)) for p, prompt in enumerate(job.prompts)}
            if job.echo and job.logprobs is not None
            else {}
        )
        try:
            # Choice i is the prompt's (i // n)-th, in prompt order, as OpenAI indexes them.
            sources = [self._choice_chunks(job, job.prompts[p], stream, scoring.get(p)) for p, stream in flat]
            async for index, item in merge(sources):
                completion_tokens += item.pop("tokens", 0)
                if item["text"] or item["finish_reason"] or item["logprobs"]:
                    yield {**envelope, "choices": [{"index": index, **item}], **extra}
        finally:
            for _, stream in flat:
                if stream is not None:
                    stream.cancel()
            for task in scoring.values():
                task.cancel()
            # also when the client leaves mid-stream: those tokens were generated
            count_tokens(job.model_id, prompt_tokens, completion_tokens)
        if include_usage:
            yield {**envelope, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}

    @staticmethod
    async def _scored(job: PreparedCompletion, prompt: Prompt) -> list[SampledToken]:
        assert job.logprobs is not None
        try:
            return await job.engine.score(prompt.tokens, job.logprobs)
        except Exception as exc:
            raise refusal(exc, job.model_id) from None

    @staticmethod
    async def _choice_chunks(
        job: PreparedCompletion,
        prompt: Prompt,
        stream: TokenStream | None,
        scoring: asyncio.Future[list[SampledToken]] | None,
    ) -> AsyncIterator[dict[str, Any]]:
        """One choice's chunk bodies (without index); `tokens` counts what each one consumed. Without a stream
        (max_tokens 0) the prompt is all there is; `scoring` gives the prompt's logprobs (echo with logprobs)."""
        offset = len(prompt.text)  # offsets count from the start of prompt + completion, as OpenAI's
        if job.echo:
            echoed = None
            if scoring is not None:  # the prompt's own, as the whole reply carries them
                # shielded: the choices share it, and one leaving must not cancel it for the others
                echoed = _legacy_logprobs(job, prompt, [], await asyncio.shield(scoring))
            yield {"text": prompt.text, "logprobs": echoed, "finish_reason": None, "tokens": 0}
        if stream is None:
            yield {"text": "", "logprobs": None, "finish_reason": "length", "tokens": 0}
            return
        async for delta in stream_choice(stream, job.stops):
            logprobs = None
            if job.logprobs is not None and delta.tokens:
                logprobs = _token_logprobs(job.engine, delta.tokens, offset)
                offset += sum(len(token_text(job.engine, t)[0]) for t in delta.tokens)
            yield {
                "text": delta.text,
                "logprobs": logprobs,
                "finish_reason": delta.finish_reason,
                "tokens": len(delta.tokens),
            }


def _mean_logprob(result: ChoiceText) -> float:
    values = [token.logprob for token in result.tokens if token.logprob is not None]
    return sum(values) / len(values) if values else float("-inf")


def _token_logprobs(engine: TextEngine, tokens: Sequence[SampledToken], offset: int) -> dict[str, Any]:
    texts, token_logprobs, tops, offsets = [], [], [], []
    for token in tokens:
        text, _ = token_text(engine, token)
        texts.append(text)
        token_logprobs.append(token.logprob)
        tops.append({token_text(engine, alt.token)[0]: alt.logprob for alt in token.top_logprobs})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": texts, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def _legacy_logprobs(
    job: PreparedCompletion, prompt: Prompt, generated: list[SampledToken], scored: list[SampledToken]
) -> dict[str, Any]:
    """The legacy shape; with echo the prompt's tokens come first, the very first one without a logprob."""
    engine = job.engine
    # Every generated token, the end-of-text one too (as OpenAI and vLLM, and this server's streams): usage
    # counts it, and lm-eval reads `token_logprobs[ctxlen:-1]`, taking the last entry for the generated one.
    if not job.echo:
        return _token_logprobs(engine, generated, len(prompt.text))
    first_text, _ = token_text(engine, prompt.tokens[0])
    head = {"tokens": [first_text], "token_logprobs": [None], "top_logprobs": [None], "text_offset": [0]}
    rest = _token_logprobs(engine, [*scored, *generated], len(first_text))
    return {key: head[key] + rest[key] for key in head}
