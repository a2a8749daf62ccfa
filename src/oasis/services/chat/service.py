"""Chat completions: messages -> the model's chat template -> choices, whole or streamed as chunks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from oasis.engines.registry import EngineRegistry
from oasis.engines.text import SamplingParams, TextEngine, TokenStream
from oasis.errors import invalid_request
from oasis.metrics import count_tokens
from oasis.protocol.extensions import ChatCompletionRequest
from oasis.services.chat.generation import (
    TextDelta,
    complete_choice,
    merge,
    metered_usage,
    open_streams,
    stream_choice,
    usage,
)
from oasis.services.chat.template import render_chat
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
from oasis.services.chat.tools import (
    ToolPlan,
    call_schema,
    looks_like_a_call,
    parse_calls,
    plan_tools,
    tools_system_prompt,
)
from oasis.services.models.engine_lookup import served_id
from oasis.storage.clock import new_id

ANY_JSON_OBJECT: dict[str, object] = {"type": "object"}


@dataclass(frozen=True)
class PreparedChat:
    engine: TextEngine
    model_id: str  # the configured id behind the requested name, for the metrics
    prompt: list[int]
    params: SamplingParams
    stops: list[str]
    n: int
    tools: ToolPlan | None = None


def _text_of(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        part = getattr(part, "root", part)
        if getattr(part, "type", None) != "text":
            raise invalid_request(
                "This model reads text only: image content parts are not supported.",
                param=f"messages[{index}].content",
                code="image_parts_unsupported",
            )
        texts.append(part.text)
    return "".join(texts)


def template_messages(request: ChatCompletionRequest, template_knows_tools: bool) -> list[dict[str, Any]]:
    """The conversation as plain dicts, the shape Hugging Face chat templates read."""
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        entry: dict[str, Any] = {
            "role": "system" if message.role == "developer" else message.role,
            "content": _text_of(message.content, index),
        }
        for extra in ("name", "tool_call_id"):
            if getattr(message, extra, None) is not None:
                entry[extra] = getattr(message, extra)
        tool_calls = getattr(message, "tool_calls", None)
        if tool_calls is not None:
            entry["tool_calls"] = [call.model_dump() for call in tool_calls.root]
            if not template_knows_tools and not entry["content"]:
                # The template will not render the calls, so the model sees them as the JSON it would write.
                entry["content"] = json.dumps(
                    [
                        {"name": c.function.name, "arguments": _arguments_value(c.function.arguments)}
                        for c in tool_calls.root
                    ]
                )
        messages.append(entry)
    return messages


def _arguments_value(arguments: str | None) -> Any:
    """A call's arguments as the JSON they hold; models emit broken JSON and clients send it back as it came,
    so text that does not parse is passed on as text."""
    try:
        return json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return arguments


def _with_system_note(messages: list[dict[str, Any]], note: str) -> list[dict[str, Any]]:
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{note}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": note}, *messages]


def _answer(plan: ToolPlan | None, text: str, finish: str) -> tuple[dict[str, Any], str]:
    """The assistant message and finish_reason: a call when the text is one, else the text."""
    calls = parse_calls(text, plan) if plan is not None else None
    if plan is None or calls is None:
        return {"role": "assistant", "content": text}, finish
    if plan.legacy:
        return {"role": "assistant", "content": None, "function_call": calls[0]["function"]}, "function_call"
    return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"


def to_sampling_params(request: ChatCompletionRequest, engine: TextEngine, prompt_tokens: int) -> SamplingParams:
    if request.top_logprobs is not None and not request.logprobs:
        raise invalid_request("'top_logprobs' needs 'logprobs' set to true.", param="top_logprobs")
    requested = request.max_completion_tokens if request.max_completion_tokens is not None else request.max_tokens
    param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    if requested is not None and requested < 1:
        raise invalid_request(f"'{param}' must be at least 1.", param=param)
    schema: dict[str, object] | None = None
    if request.response_format is not None and request.response_format.type == "json_object":
        schema = ANY_JSON_OBJECT
    elif request.response_format is not None and request.response_format.json_schema is not None:
        schema = request.response_format.json_schema.schema_ or ANY_JSON_OBJECT
    return SamplingParams(
        max_tokens=completion_budget(engine, prompt_tokens, requested, param),
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        logit_bias=token_biases(engine, request.logit_bias),
        seed=request.seed,
        ignore_eos=bool((request.model_extra or {}).get("ignore_eos", False)),
        top_logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        json_schema=schema,
    )


def _logprobs(engine: TextEngine, delta: TextDelta, wanted: bool) -> dict[str, Any] | None:
    if not wanted:
        return None
    content = []
    for sampled in delta.tokens:
        text, piece = token_text(engine, sampled)
        content.append(
            {
                "token": text,
                "logprob": sampled.logprob,
                "bytes": list(piece),
                "top_logprobs": [
                    {"token": t, "logprob": alt.logprob, "bytes": list(b)}
                    for alt in sampled.top_logprobs
                    for t, b in [token_text(engine, alt.token)]
                ],
            }
        )
    return {"content": content}


class ChatService:
    def __init__(self, registry: EngineRegistry, fingerprint: str) -> None:
        self._registry = registry
        self._fingerprint = fingerprint

    def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        engine = text_engine(self._registry, request.model, purpose="chat completions")
        template = engine.chat_template
        if template is None:
            raise invalid_request(
                f"The model '{request.model}' has no chat template (it is a base model); use /v1/completions.",
                param="model",
            )
        plan = plan_tools(request)
        knows_tools = "tools" in template
        messages = template_messages(request, knows_tools)
        template_tools = None
        if plan is not None and knows_tools:
            template_tools = [{"type": "function", "function": function} for function in plan.functions]
        elif plan is not None:
            messages = _with_system_note(messages, tools_system_prompt(plan))
        text = render_chat(template, messages, special_tokens=engine.special_tokens, tools=template_tools)
        prompt = engine.tokenize(text, add_special=False, parse_special=True)
        params = to_sampling_params(request, engine, len(prompt))
        if plan is not None and plan.forced:
            params = replace(params, json_schema=call_schema(plan))
        return PreparedChat(
            engine=engine,
            model_id=served_id(self._registry, request.model),
            prompt=prompt,
            params=params,
            stops=stop_list(request.stop),
            n=request.n or 1,
            tools=plan,
        )

    def _envelope(self, request: ChatCompletionRequest, completion_id: str, created: int) -> dict[str, Any]:
        return {
            "id": completion_id,
            "created": created,
            "model": request.model,
            "system_fingerprint": self._fingerprint,
        }

    async def create(self, request: ChatCompletionRequest) -> dict[str, Any]:
        upstream = forwarding_engine(self._registry, request.model)
        if upstream is not None:
            return await forward_whole(upstream, "/chat/completions", request, request.model)
        chat = self.prepare(request)
        streams = open_streams(chat.engine, chat.prompt, chat.params, chat.n, model=chat.model_id)
        try:
            results = await asyncio.gather(*(complete_choice(stream, chat.stops) for stream in streams))
        finally:
            for stream in streams:
                stream.cancel()  # a client that left mid-way must not keep the slots busy
        completion_tokens = sum(result.completion_tokens for result in results)
        return {
            **self._envelope(request, new_id("chatcmpl-"), int(time.time())),
            "object": "chat.completion",
            "choices": [
                {
                    "index": index,
                    "message": message,
                    "logprobs": _logprobs(chat.engine, TextDelta(result.text, result.tokens), bool(request.logprobs)),
                    "finish_reason": finish,
                }
                for index, result in enumerate(results)
                for message, finish in [_answer(chat.tools, result.text, result.finish_reason)]
            ],
            "usage": metered_usage(chat.model_id, len(chat.prompt), completion_tokens),
        }

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[dict[str, Any]]:
        """Validates and queues the request now (so errors still get an HTTP status), then returns the chunks."""
        upstream = forwarding_engine(self._registry, request.model)
        if upstream is not None:
            return forward_stream(upstream, "/chat/completions", request, request.model)
        chat = self.prepare(request)
        return self._chunks(
            request, chat, open_streams(chat.engine, chat.prompt, chat.params, chat.n, model=chat.model_id)
        )

    async def _chunks(
        self, request: ChatCompletionRequest, chat: PreparedChat, streams: list[TokenStream]
    ) -> AsyncIterator[dict[str, Any]]:
        """Chunks in OpenAI's order: each choice opens with the role, then content deltas, then its
        finish_reason; with `stream_options.include_usage` a last chunk has `choices: []` and the usage."""
        envelope = {**self._envelope(request, new_id("chatcmpl-"), int(time.time())), "object": "chat.completion.chunk"}
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        extra: dict[str, Any] = {"usage": None} if include_usage else {}
        completion_tokens = 0
        for index in range(chat.n):
            yield {
                **envelope,
                "choices": [
                    {
                        "index": index,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
                **extra,
            }
        try:
            held = [_HeldCall(forced=chat.tools is not None and chat.tools.forced) for _ in range(chat.n)]
            async for index, delta in _merged(streams, chat.stops):
                completion_tokens += len(delta.tokens)
                text = delta.text
                if chat.tools is not None:
                    text = held[index].take(delta.text)
                if text or (request.logprobs and delta.tokens):
                    yield {
                        **envelope,
                        "choices": [
                            {
                                "index": index,
                                "delta": {"content": text},
                                "logprobs": _logprobs(chat.engine, delta, bool(request.logprobs)),
                                "finish_reason": None,
                            }
                        ],
                        **extra,
                    }
                if delta.finish_reason is not None:
                    finish: str = delta.finish_reason
                    if chat.tools is not None and held[index].text:
                        message, finish = _answer(chat.tools, held[index].text, finish)
                        for call_delta in _call_deltas(message):
                            yield {
                                **envelope,
                                "choices": [
                                    {"index": index, "delta": call_delta, "logprobs": None, "finish_reason": None}
                                ],
                                **extra,
                            }
                    yield {
                        **envelope,
                        "choices": [{"index": index, "delta": {}, "logprobs": None, "finish_reason": finish}],
                        **extra,
                    }
        finally:  # also when the client leaves mid-stream: those tokens were generated
            count_tokens(chat.model_id, len(chat.prompt), completion_tokens)
        if include_usage:
            yield {**envelope, "choices": [], "usage": usage(len(chat.prompt), completion_tokens)}


class _HeldCall:
    """Streams text at once unless it may be a tool call, which is held until it is whole."""

    def __init__(self, forced: bool) -> None:
        self.decided: bool | None = True if forced else None
        self.text = ""

    def take(self, text: str) -> str:
        """Returns what can go out now; keeps what might be a call."""
        if self.decided is False:
            return text
        self.text += text
        if self.decided is None:
            self.decided = looks_like_a_call(self.text)
            if self.decided is False:
                released, self.text = self.text, ""
                return released
        return ""


def _call_deltas(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished call as OpenAI streams one: id, type and name first, then the arguments."""
    if message.get("function_call"):
        call = message["function_call"]
        return [
            {"function_call": {"name": call["name"], "arguments": ""}},
            {"function_call": {"arguments": call["arguments"]}},
        ]
    if message.get("tool_calls"):
        deltas = []
        for position, call in enumerate(message["tool_calls"]):
            deltas.append(
                {
                    "tool_calls": [
                        {
                            "index": position,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": ""},
                        }
                    ]
                }
            )
            deltas.append(
                {"tool_calls": [{"index": position, "function": {"arguments": call["function"]["arguments"]}}]}
            )
        return deltas
    return [{"content": message["content"]}] if message.get("content") else []


async def _merged(streams: list[TokenStream], stops: list[str]) -> AsyncIterator[tuple[int, TextDelta]]:
    """The choices' deltas as they come, tagged with the choice index; every slot is freed on the way out."""
    try:
        async for entry in merge([stream_choice(stream, stops) for stream in streams]):
            yield entry
    finally:
        for stream in streams:
            stream.cancel()
