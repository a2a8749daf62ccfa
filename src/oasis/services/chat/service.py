"""Chat completions: messages -> the model's chat template -> choices, whole or streamed as chunks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from oasis.engines.options import ChatFormatOptions
from oasis.engines.registry import EngineRegistry
from oasis.engines.speech import TranscriptionEngine
from oasis.engines.text import SamplingParams, TextEngine, TokenStream, UnusableSchema
from oasis.errors import OasisError, invalid_request
from oasis.metrics import count_tokens
from oasis.protocol.extensions import REASONING_EFFORTS, ChatCompletionRequest
from oasis.services.chat.audio_parts import has_audio_parts, with_audio_heard
from oasis.services.chat.call_stream import CallPiece, CallStream, OpenedCalls, StreamedCall
from oasis.services.chat.conversation import template_messages, with_system_note
from oasis.services.chat.file_parts import has_file_parts, with_file_text
from oasis.services.chat.generation import (
    ChoiceText,
    TextDelta,
    cached_prompt_tokens,
    check_queue_holds,
    check_stream_options,
    complete_choice,
    merge,
    metered_usage,
    open_streams,
    stream_choice,
    usage,
)
from oasis.services.chat.logprobs import ContentTokens, logprob_entries
from oasis.services.chat.moderated import (
    ModerationPlan,
    Moderator,
    flagged,
    input_texts,
    moderation_plan,
    moderation_results,
    no_results,
    output_moderation,
)
from oasis.services.chat.reasoning import think_tags
from oasis.services.chat.reply import Reply, ReplyFormat, ReplyReader, reply_format_for
from oasis.services.chat.spoken import AnswerVoice, SpokenAnswers
from oasis.services.chat.template import render_chat
from oasis.services.chat.text_models import (
    completion_budget,
    forward_stream,
    forward_whole,
    forwarding_engine,
    stop_list,
    text_engine,
    token_biases,
)
from oasis.services.chat.tool_formats import FORMATS, ParsedCall, detect_format, read_calls, template_variables
from oasis.services.chat.tools import (
    ToolPlan,
    call_grammar,
    call_schema,
    custom_input,
    fits,
    grammar_inputs,
    only,
    plan_tools,
    tools_system_prompt,
)
from oasis.services.files.service import FileService
from oasis.services.keys import DEFAULT_PROJECT
from oasis.services.models.engine_lookup import check_known, check_not_failed, helper_engine, served_id
from oasis.storage.clock import new_id

log = logging.getLogger("oasis.chat")

ANY_JSON_OBJECT: dict[str, object] = {"type": "object"}
# An answer a `block` moderation policy withholds (its calls too: they were the flagged answer's).
_WITHHELD: dict[str, Any] = {"role": "assistant", "content": None}


@dataclass
class TokenTally:
    """The tokens a local stream has generated so far, for a caller that may close it before its usage chunk
    (a run cancelled mid-reply still counts what was generated)."""

    completion_tokens: int = 0


@dataclass(frozen=True)
class PreparedChat:
    engine: TextEngine
    model_id: str  # the configured id behind the requested name, for the metrics
    prompt: list[int]
    params: SamplingParams
    stops: list[str]
    n: int
    reply_format: ReplyFormat
    tools: ToolPlan | None = None
    voice: AnswerVoice | None = None  # the answer is spoken (`modalities` with audio)

    @property
    def functions(self) -> dict[str, Any] | None:
        """The offered functions by name (None: no tools)."""
        return {function["name"]: function for function in self.tools.functions} if self.tools else None

    def reader(self) -> ReplyReader:
        return ReplyReader(self.reply_format, self.functions)

    def speaks(self, message: Mapping[str, Any]) -> bool:
        """Whether an answer is spoken: one that ends in calls is not (its text stays content)."""
        return self.voice is not None and not message.get("tool_calls") and not message.get("function_call")

    def reasoning_tokens(self, reply: Reply, completion_tokens: int) -> int:
        """Of a reply's `completion_tokens`, those its thinking took (OpenAI's `reasoning_tokens`): the thinking's
        text as the model's tokenizer reads it, its markup left out."""
        if not reply.reasoning:
            return 0
        return min(completion_tokens, len(self.engine.tokenize(reply.reasoning, add_special=False)))


def _message(
    plan: ToolPlan | None,
    reply: Reply,
    finish: str,
    forced: CallStream | None = None,
    opened: OpenedCalls | None = None,
) -> tuple[dict[str, Any], str]:
    """The assistant message and finish_reason of a reply read whole; `forced`: a forced reply's calls as they were
    read while written (`_forced_reading`), which the reply is answered with, whole and streamed alike; `opened`:
    an unforced reply's calls read so from where they opened (the reply's calls are the rest)."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if plan is None:
        return message, finish
    if opened is not None and opened.calls:
        # Cut short, the call as far as it was written, as for a forced reply; first, as its pieces were sent so
        read = [ParsedCall(call.name, call.arguments) for call in opened.calls]
        reply = replace(reply, calls=read + reply.calls if plan.parallel else read[:1])
        finish = "tool_calls" if opened.finished else finish
    elif forced is not None and forced.calls:
        # Cut short (max_tokens, a stop string), a forced call is the call as far as it was written, as OpenAI
        # answers it: its arguments unfinished, the finish_reason the engine's.
        read = [ParsedCall(call.name, call.arguments) for call in forced.calls]
        reply = replace(reply, content="", calls=read if plan.parallel else read[:1])
        finish = "tool_calls" if forced.finished else finish
    elif not reply.calls:
        return message, finish
    else:
        finish = "tool_calls"
    calls = [
        {"id": new_id("call_"), "type": "custom", "custom": {"name": call.name, "input": custom_input(call.arguments)}}
        if call.name in plan.custom
        else {"id": new_id("call_"), "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        for call in reply.calls
    ]
    message["content"] = reply.content or None
    if plan.legacy:
        return {**message, "function_call": calls[0]["function"]}, "function_call"
    return {**message, "tool_calls": calls}, finish


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


# Conversations with more text than this are rendered and tokenized off the event loop.
PREPARE_INLINE_CHARS = 64 * 1024


def _text_size(request: ChatCompletionRequest) -> int:
    """About how much text the request's messages and tools hold (cheap: no serialising)."""
    size = 0
    for message in request.messages:
        message = getattr(message, "root", message)  # the spec's message and part types are RootModels
        content = getattr(message, "content", None)
        content = getattr(content, "root", content)
        if isinstance(content, str):
            size += len(content)
        elif isinstance(content, list):
            size += sum(len(getattr(getattr(part, "root", part), "text", "") or "") for part in content)
        size += len(str(getattr(message, "tool_calls", None) or ""))
    size += len(str(request.response_format or ""))
    return size + sum(len(str(tool)) for tool in request.tools or [])


# What render_chat gives every template itself (with the model's special tokens): a request's template variables
# may not take these names.
_RENDERED_NAMES = frozenset({"messages", "tools", "add_generation_prompt"})


def _template_variables(
    request: ChatCompletionRequest, thinking: bool, special_tokens: Mapping[str, str]
) -> dict[str, Any]:
    """The names a request sets for the chat template besides its messages and tools."""
    # llama.cpp passes enable_thinking to every template; some of its own test templates need it.
    variables: dict[str, Any] = {"enable_thinking": thinking}
    if request.reasoning_effort is not None:
        if request.reasoning_effort not in REASONING_EFFORTS:
            raise invalid_request(
                f"'{request.reasoning_effort}' is not one of {list(REASONING_EFFORTS)} - 'reasoning_effort'",
                param="reasoning_effort",
            )
        # gpt-oss's and DeepSeek's templates read the effort; `none` is thinking off for those that only switch.
        variables["reasoning_effort"] = request.reasoning_effort
        if request.reasoning_effort == "none":
            variables["enable_thinking"] = False
    extra = request.chat_template_kwargs or {}
    if taken := sorted((_RENDERED_NAMES | special_tokens.keys()).intersection(extra)):
        raise invalid_request(
            f"'chat_template_kwargs' may not set {', '.join(map(repr, taken))}: the request itself gives those.",
            param="chat_template_kwargs",
        )
    return {**variables, **extra}


class ChatService:
    def __init__(
        self,
        registry: EngineRegistry,
        fingerprint: str,
        files: FileService,
        spoken: SpokenAnswers,
        moderate: Moderator,
        transcription_model: str = "whisper-1",
    ) -> None:
        self._registry = registry
        self._moderate = moderate  # scores moderated completions' input and answers (`moderation`)
        self._fingerprint = fingerprint
        self._files = files  # reads file content parts for local models
        self._spoken = spoken  # speaks local models' answers (`modalities` with audio)
        self._transcription_model = transcription_model  # hears input_audio parts for local models
        # Keyed by the engine object itself, held weakly: fine-tunes load and unload, and an id() could be
        # reused by a later engine with another vocabulary.
        self._markup: weakref.WeakKeyDictionary[TextEngine, dict[tuple[str, ...], frozenset[int]]] = (
            weakref.WeakKeyDictionary()
        )

    def _markup_tokens(self, engine: TextEngine, markers: tuple[str, ...]) -> frozenset[int]:
        """The markers that are single (special) tokens in this model's vocabulary, found once per model."""
        known = self._markup.setdefault(engine, {})
        found = known.get(markers)
        if found is None:
            tokens = (engine.tokenize(marker, add_special=False, parse_special=True) for marker in markers)
            found = known[markers] = frozenset(ids[0] for ids in tokens if len(ids) == 1)
        return found

    def prepare(self, request: ChatCompletionRequest) -> PreparedChat:
        check_stream_options(request)
        engine = text_engine(self._registry, request.model, purpose="chat completions")
        voice = self._spoken.voice_for(request)
        template = engine.chat_template
        if template is None:
            raise invalid_request(
                f"The model '{request.model}' has no chat template (it is a base model); use /v1/completions.",
                param="model",
            )
        plan = plan_tools(request)
        if engine.tool_use_template is not None and (request.tools or request.__dict__.get("functions")):
            template = engine.tool_use_template  # llama.cpp's rule: a request offering tools (any tool_choice)
        spec = self._registry.resolve(request.model)
        options = ChatFormatOptions.of(spec.options if spec is not None else {})
        tool_format = FORMATS[options.tool_parser] if options.tool_parser else detect_format(template)
        messages = template_messages(request, template, tool_format)
        template_tools = None
        if plan is not None and "tools" in template:
            template_tools = [{"type": "function", "function": function} for function in plan.functions]
        elif plan is not None:
            messages = with_system_note(messages, tools_system_prompt(plan))
        variables = _template_variables(request, options.reasoning != "off", engine.special_tokens)
        variables.update(template_variables(tool_format, template_tools))
        text = render_chat(
            template, messages, special_tokens=engine.special_tokens, tools=template_tools, variables=variables
        )
        prompt = engine.tokenize(text, add_special=False, parse_special=True)
        params = to_sampling_params(request, engine, len(prompt))
        check_queue_holds(engine, request.n or 1, "n")
        for param, schema in grammar_inputs(request):
            # a custom call is held to its grammar (or written again under it): one that cannot be is refused now
            try:
                engine.check_schema(schema)
            except UnusableSchema as exc:
                raise invalid_request(f"Invalid tool grammar: {exc}", param=param, code="invalid_grammar") from None
        if plan is not None and plan.forced:
            params = replace(params, json_schema=call_schema(plan))
        if params.json_schema is not None:
            try:
                engine.check_schema(params.json_schema)
            except UnusableSchema as exc:
                forced = plan is not None and plan.forced
                raise invalid_request(
                    f"Invalid JSON Schema: {exc}",
                    param="tools" if forced else "response_format.json_schema.schema",
                    code="invalid_json_schema",
                ) from None
        # A grammar makes the reply JSON from its first token: there is no thinking to read.
        thinking = "inline" if options.reasoning == "inline" else "separate"
        if params.json_schema is not None:
            thinking = "none"  # a grammar makes the reply JSON from its first token: there is no thinking to read
        # A forced reply is a bare JSON call whatever the family writes otherwise (harmony's addressed messages too)
        read_as = FORMATS["json"] if plan is not None and plan.forced else tool_format
        reply_format = reply_format_for(read_as, think_tags(template), text, thinking=thinking)
        think = reply_format.think
        markers = (*tool_format.markers, *((think.open, think.close) if think else ()))
        params = replace(params, markup_tokens=self._markup_tokens(engine, markers))
        tags = think_tags(template)
        if plan is not None and params.json_schema is None:
            # The thinking's tags also where it stays in the content (`inline`): a call does not open inside it
            thinking_open = reply_format.thinking_open or bool(reply_format.content_prefill)
            grammar = call_grammar(
                plan,
                read_as.name,
                (tags.open, tags.close),
                thinking_open,
                noted=template_tools is None,
                template=template,
                thinking_ended_by=tags.ended_by,
            )
            params = replace(params, call_grammar=grammar)
        return PreparedChat(
            engine=engine,
            model_id=served_id(self._registry, request.model),
            prompt=prompt,
            params=params,
            stops=stop_list(request.stop),
            n=request.n or 1,
            reply_format=reply_format,
            tools=plan,
            voice=voice,
        )

    async def _repaired(self, chat: PreparedChat, reply: Reply) -> tuple[Reply, int]:
        """The reply's calls as the client gets them: one unless parallel calls are allowed, and each whose
        arguments do not fit its function's schema written again under that
        function's grammar (the same prompt and sampling): a client gets a call it can run, where returning
        the misfit as text would leave it nothing to act on. A call that cannot be written again (the engine's
        queue is full, the budget runs out) stays as the model wrote it. Also: the tokens that took."""
        plan = chat.tools
        if plan is None or not reply.calls:
            return reply, 0
        kept = reply.calls if plan.parallel else reply.calls[:1]  # parallel_tool_calls false: the first call
        if plan.forced or all(fits(plan, call.name, call.arguments) for call in kept):
            return replace(reply, calls=kept), 0
        calls: list[ParsedCall] = []
        spent = 0
        for call in kept:
            if fits(plan, call.name, call.arguments):
                calls.append(call)
                continue
            log.info("call to %s did not fit its schema: written again under its grammar", call.name)
            forced = only(plan, call.name)
            params = replace(
                chat.params,
                call_grammar=None,
                json_schema=call_schema(forced),
                markup_tokens=frozenset(),
                ignore_eos=False,
                top_logprobs=None,
            )
            try:
                (stream,) = open_streams(chat.engine, chat.prompt, params, 1, model=chat.model_id)
            except OasisError:
                calls.append(call)
                continue
            try:
                result = await complete_choice(stream)
            finally:
                stream.cancel()
            spent += result.completion_tokens
            functions = {function["name"]: function for function in forced.functions}
            written = read_calls(result.text, FORMATS["json"], functions, final=True).calls[:1]
            calls.extend(written or [call])  # cut short (max_tokens): the call as the model wrote it
        return replace(reply, calls=calls), spent

    def _envelope(self, request: ChatCompletionRequest, completion_id: str, created: int) -> dict[str, Any]:
        return {
            "id": completion_id,
            "created": created,
            "model": request.model,
            "system_fingerprint": self._fingerprint,
        }

    async def with_files_read(self, request: ChatCompletionRequest, project_id: str | None) -> ChatCompletionRequest:
        """File content parts as the text in them, audio parts as what was said in them, and earlier spoken
        answers named by id as what they said, for a local model (one routed upstream reads them itself)."""
        files, audio = project_id is not None and has_file_parts(request), has_audio_parts(request)
        answers = project_id is not None and any(getattr(message, "audio", None) for message in request.messages)
        if not (files or audio or answers) or forwarding_engine(self._registry, request.model) is not None:
            return request
        # What prepare() would refuse cheaply is refused before any file is read or audio heard.
        text_engine(self._registry, request.model, purpose="chat completions")
        self._spoken.voice_for(request)
        if answers:
            assert project_id is not None
            request = await self._spoken.with_transcripts(request, project_id)
        if files:
            assert project_id is not None
            request = await with_file_text(request, project_id, self._files)
        if audio:
            request = await with_audio_heard(request, self._transcriber)
        return request

    def _transcriber(self, param: str) -> TranscriptionEngine:
        model = self._transcription_model
        engine: TranscriptionEngine = helper_engine(
            self._registry,
            model,
            TranscriptionEngine,
            "transcription",
            why=f"This model reads text only, and input_audio parts are heard by the transcription model '{model}' "
            "(`chat.audio_transcription_model`)",
            param=param,
            code="input_audio_parts_unsupported",
        )
        return engine

    async def prepared(self, request: ChatCompletionRequest) -> PreparedChat | None:
        """`prepare_local`, in a thread when the request is long: rendering the template and tokenizing a
        conversation of megabytes takes long enough to stall every stream the event loop serves."""
        if not self._registry.configured(request.model):
            # A fine-tune may be unloaded between a prepare and its streams (or during a prepare in a thread):
            # create and stream prepare it themselves, next to opening its streams, as before.
            return None
        if _text_size(request) > PREPARE_INLINE_CHARS:
            return await asyncio.to_thread(self.prepare_local, request)
        return self.prepare_local(request)

    async def create(
        self, request: ChatCompletionRequest, prepared: PreparedChat | None = None, project_id: str = DEFAULT_PROJECT
    ) -> dict[str, Any]:
        """`prepared` is the request's own `prepared`/`prepare_local`, when the caller has it already; a spoken
        answer's transcript is kept for `project_id`."""
        upstream = forwarding_engine(self._registry, request.model)
        if upstream is not None:
            return await forward_whole(upstream, "/chat/completions", request, request.model)
        chat = prepared or self.prepare(request)
        moderation = moderation_plan(request)
        input_moderation = None
        if moderation is not None:
            input_moderation = await moderation_results(self._moderate, moderation, input_texts(request))
            if moderation.block_input and flagged(input_moderation):
                return self._blocked(request, chat, input_moderation)
        streams = open_streams(chat.engine, chat.prompt, chat.params, chat.n, model=chat.model_id)
        try:
            results = await asyncio.gather(*(complete_choice(stream, chat.stops) for stream in streams))
        finally:
            for stream in streams:
                stream.cancel()  # a client that left mid-way must not keep the slots busy
        completion_tokens = sum(result.completion_tokens for result in results)
        reasoning_tokens = 0
        messages = []
        logprobs = []
        for result in results:
            reader = chat.reader()
            opened = _opened_whole(chat, result)
            if opened is not None and opened.start is not None and not opened.came_to_nothing:
                reader.feed(result.text[: opened.start])
                reader.cut(opened.start)
            else:
                reader.feed(result.text)
            finished = reader.finish()[0]
            content_tokens = ContentTokens()
            content_tokens.add(result.tokens)
            shown = content_tokens.settled(reader, final=True)
            logprobs.append(logprob_entries(chat.engine, shown) if request.logprobs else None)
            reasoning_tokens += chat.reasoning_tokens(finished, result.completion_tokens)
            reply, repair_tokens = await self._repaired(chat, finished)
            completion_tokens += repair_tokens
            forced = _forced_reading(chat)
            if forced is not None:
                forced.feed(result.text)
                if forced.calls and not forced.finished:  # the JSON's tokens are no content's
                    logprobs[-1] = None
            messages.append(_message(chat.tools, reply, result.finish_reason, forced, opened))
        answer_moderation: dict[str, Any] = {}
        if moderation is not None and input_moderation is not None:
            # before the answers are spoken: a withheld answer is not
            output, withheld = await self._answers_moderated(
                moderation, [message["content"] or "" for message, _ in messages]
            )
            answer_moderation = {"moderation": {"input": input_moderation, "output": output}}
            messages = [
                (dict(_WITHHELD), "content_filter") if cut else (message, finish)
                for (message, finish), cut in zip(messages, withheld, strict=True)
            ]
            logprobs = [None if cut else entry for entry, cut in zip(logprobs, withheld, strict=True)]
        for message, finish in messages:
            if chat.voice is not None and chat.speaks(message) and finish != "content_filter":
                message["audio"] = await self._spoken.spoken(chat.voice, message["content"] or "", project_id)
                message["content"] = None  # as OpenAI's audio models: what was said is the audio's transcript
        return {
            **self._envelope(request, new_id("chatcmpl-"), int(time.time())),
            **answer_moderation,
            "object": "chat.completion",
            "choices": [
                {
                    "index": index,
                    "message": message,
                    "logprobs": choice_logprobs,
                    "finish_reason": finish,
                }
                for index, (choice_logprobs, (message, finish)) in enumerate(zip(logprobs, messages, strict=True))
            ],
            "usage": metered_usage(
                chat.model_id, len(chat.prompt), completion_tokens, cached_prompt_tokens(streams), reasoning_tokens
            ),
        }

    async def _answers_moderated(
        self, moderation: ModerationPlan, answers: list[str]
    ) -> tuple[dict[str, Any], list[bool]]:
        """The answers' moderation, and which of them a `block` policy withholds. Scoring that fails once the
        answers are made is the moderation's error, not the request's: under `score` the answers stand; under
        `block` none can be shown unchecked."""
        try:
            output, marks = await output_moderation(self._moderate, moderation, answers)
        except OasisError as exc:
            error = {"type": "error", "code": exc.code or exc.type, "message": exc.message}
            return error, [moderation.block_output] * len(answers)
        return output, [mark and moderation.block_output for mark in marks]

    async def _answer_moderated(self, moderation: ModerationPlan, answer: str) -> tuple[dict[str, Any], bool]:
        output, withheld = await self._answers_moderated(moderation, [answer])
        return output, withheld[0]

    def _blocked(
        self, request: ChatCompletionRequest, chat: PreparedChat, input_moderation: dict[str, Any]
    ) -> dict[str, Any]:
        """The answer to an input its moderation flagged under a `block` policy: nothing generated."""
        return {
            **self._envelope(request, new_id("chatcmpl-"), int(time.time())),
            "moderation": {"input": input_moderation, "output": no_results(input_moderation["model"])},
            "object": "chat.completion",
            "choices": [
                {
                    "index": index,
                    "message": dict(_WITHHELD),
                    "logprobs": None,
                    "finish_reason": "content_filter",
                }
                for index in range(chat.n)
            ],
            "usage": metered_usage(chat.model_id, len(chat.prompt), 0),
        }

    def check_servable(self, model: str) -> None:
        """What a request answered later (a background response) is refused for at once: a 404 for a model no
        engine here serves or forwards, a 503 for one that failed to load."""
        check_known(self._registry, model)
        check_not_failed(self._registry, model)

    def context_length(self, model: str) -> int | None:
        """Tokens a sequence of the model holds, or None for a model served by an upstream engine."""
        if forwarding_engine(self._registry, model) is not None:
            return None
        return text_engine(self._registry, model, purpose="chat completions").context_length

    def prepare_local(self, request: ChatCompletionRequest) -> PreparedChat | None:
        """The request rendered and tokenized for its local engine (so its prompt can be measured), or None for a
        model served by an upstream engine."""
        if forwarding_engine(self._registry, request.model) is not None:
            return None
        return self.prepare(request)

    def stream(
        self,
        request: ChatCompletionRequest,
        prepared: PreparedChat | None = None,
        tally: TokenTally | None = None,
        project_id: str = DEFAULT_PROJECT,
    ) -> AsyncIterator[dict[str, Any]]:
        """Validates and queues the request now (so errors still get an HTTP status), then returns the chunks.
        `prepared` is the request's own `prepare_local`, when the caller has it already; `tally` follows a local
        stream's generated tokens as they come (an upstream's are known only from its usage chunk)."""
        upstream = forwarding_engine(self._registry, request.model)
        if upstream is not None:
            return forward_stream(upstream, "/chat/completions", request, request.model)
        chat = prepared or self.prepare(request)
        # A moderated input is scored before anything is generated (a blocked one never is): its streams open
        # in the chunks' first step, whose errors still get an HTTP status (sse_response awaits the first chunk).
        streams = None if request.moderation is not None else self._open(chat)
        return self._chunks(request, chat, streams, tally or TokenTally(), project_id)

    @staticmethod
    def _open(chat: PreparedChat) -> list[TokenStream]:
        return open_streams(chat.engine, chat.prompt, chat.params, chat.n, model=chat.model_id)

    async def _chunks(
        self,
        request: ChatCompletionRequest,
        chat: PreparedChat,
        opened: list[TokenStream] | None,
        tally: TokenTally,
        project_id: str,
    ) -> AsyncIterator[dict[str, Any]]:
        """Chunks in OpenAI's order: each choice opens with the role, then content deltas, then its
        finish_reason; with `stream_options.include_usage` a last chunk has `choices: []` and the usage."""
        envelope = {**self._envelope(request, new_id("chatcmpl-"), int(time.time())), "object": "chat.completion.chunk"}
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        extra: dict[str, Any] = {"usage": None} if include_usage else {}

        def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
            return {**envelope, "choices": [choice], **extra}

        moderation = moderation_plan(request)
        input_moderation: dict[str, Any] | None = None
        answer_moderations: dict[int, dict[str, Any]] = {}  # each choice's, as it ends
        streams = opened or []
        try:
            if moderation is not None:
                input_moderation = await moderation_results(self._moderate, moderation, input_texts(request))
                if moderation.block_input and flagged(input_moderation):
                    for index in range(chat.n):
                        yield chunk(index, {"role": "assistant", "content": ""})
                        yield chunk(index, {}, "content_filter")
                    yield {**envelope, "choices": [], "moderation": _streamed_moderation(input_moderation, {}), **extra}
                    if include_usage:
                        yield {**envelope, "choices": [], "usage": usage(len(chat.prompt), 0)}
                    return
            if opened is None:
                streams = self._open(chat)
            # Inside the try: a client gone before the first tokens (closing this at a role chunk) frees its
            # sequences too, rather than leave them generating to max_tokens.
            for index in range(chat.n):
                yield chunk(index, {"role": "assistant", "content": ""})
            readers = [chat.reader() for _ in range(chat.n)]
            content_tokens = [ContentTokens() for _ in range(chat.n)]
            generated = [0] * chat.n
            reasoning_tokens = 0
            # a spoken answer streams its transcript as `audio.transcript` deltas, then the audio, under one id
            answer_ids = [new_id("audio_") for _ in range(chat.n)]
            # With tools offered, an answer may still end in calls (then it is not spoken, and its text is content,
            # as in a whole answer): a spoken answer's text waits for its end. So does an answer that a `block`
            # policy may withhold.
            withholds = moderation is not None and moderation.block_output
            held = [_Held() for _ in range(chat.n)] if (chat.voice and chat.tools) or withholds else None
            # A forced reply's calls are read as they are written (call_stream.py), and sent so unless the answer is
            # held; others' are sent once they are whole.
            call_streams = [_forced_reading(chat) for _ in range(chat.n)]
            # An unforced reply's calls, read as they are written from where the engine's call grammar took hold
            opened_calls = [_opened_reading(chat) for _ in range(chat.n)]

            def said(index: int, text: str, logprobs: Any = None) -> dict[str, Any] | None:
                if held is not None:
                    held[index].content += text
                    held[index].logprobs.extend(logprobs["content"] if logprobs else [])
                    return None
                if chat.voice is None:
                    return chunk(index, {"content": text}, logprobs=logprobs)
                return chunk(index, {"audio": {"id": answer_ids[index], "transcript": text}}, logprobs=logprobs)

            def thought(index: int, text: str) -> dict[str, Any] | None:
                if withholds and held is not None:  # the thinking of an answer that may be withheld, too
                    held[index].reasoning += text
                    return None
                return chunk(index, {"reasoning_content": text})

            def shown(index: int, final: bool = False) -> dict[str, Any] | None:
                """The logprobs of the content tokens settled now (none asked: None)."""
                if not request.logprobs:
                    return None
                settled = content_tokens[index].settled(readers[index], final)
                return logprob_entries(chat.engine, settled) if settled else None

            async for index, delta in _merged(streams, chat.stops):
                tally.completion_tokens += len(delta.tokens)
                generated[index] += len(delta.tokens)
                if request.logprobs:  # placing each token in the text is work at every token, for logprobs only
                    content_tokens[index].add(delta.tokens)
                answer_text = delta.text
                call_pieces: list[CallPiece] = []
                if (calls_read := opened_calls[index]) is not None:
                    fed = readers[index].fed
                    opened_before = calls_read.start is not None
                    call_pieces = calls_read.feed(delta.text, delta.tokens)
                    if delta.finish_reason is not None:
                        call_pieces += calls_read.close()
                    if calls_read.start is not None and not opened_before:
                        readers[index].cut(calls_read.start)  # what of the opening was held is not content
                    answer_text = calls_read.answer_part(delta.text, fed)
                ready = readers[index].feed(answer_text)
                if ready.reasoning and (thought_now := thought(index, ready.reasoning)):
                    yield thought_now
                logprobs = shown(index)
                if (ready.content or logprobs) and (said_now := said(index, ready.content, logprobs)):
                    yield said_now
                if (call_stream := call_streams[index]) is not None:
                    call_pieces = call_stream.feed(delta.text)
                for piece in call_pieces if held is None else ():
                    yield chunk(index, _call_piece_delta(piece))
                if delta.finish_reason is not None:
                    if calls_read is not None and calls_read.came_to_nothing:
                        readers[index].restore(calls_read.after_start)
                    reply, rest = readers[index].finish()
                    reasoning_tokens += chat.reasoning_tokens(reply, generated[index])
                    logprobs = shown(index, final=True)
                    reply, repair_tokens = await self._repaired(chat, reply)
                    tally.completion_tokens += repair_tokens
                    if rest.reasoning and (thought_now := thought(index, rest.reasoning)):
                        yield thought_now
                    message, finish = _message(
                        chat.tools, reply, delta.finish_reason, call_streams[index], opened_calls[index]
                    )
                    if message["content"] is None:  # calls only (one cut short was held back as text until now)
                        rest = replace(rest, content="")
                        logprobs = None if finish != "tool_calls" else logprobs
                    if (rest.content or logprobs) and (said_now := said(index, rest.content, logprobs)):
                        yield said_now
                    reading = call_streams[index] or opened_calls[index]
                    streamed = reading.calls if held is None and reading is not None else []
                    if moderation is not None:
                        scored, withheld = await self._answer_moderated(moderation, message["content"] or "")
                        answer_moderations[index] = scored
                        if withheld:
                            yield chunk(index, {}, "content_filter")
                            continue
                    spoken = chat.speaks(message)
                    if held is not None and held[index].reasoning:
                        yield chunk(index, {"reasoning_content": held[index].reasoning})
                    if held is not None and (held[index].content or held[index].logprobs):
                        text = held[index].content
                        kept = {"audio": {"id": answer_ids[index], "transcript": text}} if spoken else None
                        settled = {"content": held[index].logprobs} if held[index].logprobs else None
                        yield chunk(index, kept or {"content": text}, logprobs=settled)
                    for call_delta in _call_deltas(message, streamed):
                        yield chunk(index, call_delta)
                    if spoken and chat.voice is not None:
                        speech = self._spoken_deltas(chat.voice, reply.content, answer_ids[index], project_id)
                        async with contextlib.aclosing(speech):  # a client gone mid-way stops the synthesis
                            async for audio_delta in speech:
                                yield chunk(index, {"audio": audio_delta})
                    yield chunk(index, {}, finish)
        finally:
            for stream in streams:
                stream.cancel()
            # also when the client leaves mid-stream: those tokens were generated
            count_tokens(chat.model_id, len(chat.prompt), tally.completion_tokens)
        if input_moderation is not None:
            yield {
                **envelope,
                "choices": [],
                "moderation": _streamed_moderation(input_moderation, answer_moderations),
                **extra,
            }
        if include_usage:
            counts = usage(len(chat.prompt), tally.completion_tokens, cached_prompt_tokens(streams), reasoning_tokens)
            yield {**envelope, "choices": [], "usage": counts}

    async def _spoken_deltas(
        self, voice: AnswerVoice, transcript: str, answer_id: str, project_id: str
    ) -> AsyncGenerator[dict[str, Any], None]:
        """A streamed answer's audio, once its transcript is whole: base64 pieces as they are spoken, then when the
        answer expires (its transcript kept until then)."""
        async with contextlib.aclosing(self._spoken.speech(voice, transcript)) as pieces:
            async for piece in pieces:
                yield {"id": answer_id, "data": base64.b64encode(piece).decode("ascii")}
        answer = await self._spoken.remember(project_id, transcript, answer_id)
        yield {"id": answer_id, "expires_at": answer.expires_at}


@dataclass
class _Held:
    """A streamed answer's text held until its end (it may end in calls, or be withheld), with its logprobs."""

    content: str = ""
    reasoning: str = ""
    logprobs: list[dict[str, Any]] = field(default_factory=list)


def _streamed_moderation(input_moderation: dict[str, Any], answers: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """A stream's moderation chunk: the input's, and the answers' results in choice order (an error, if scoring
    any of them failed)."""
    failed = next((side for side in answers.values() if side["type"] == "error"), None)
    if failed is not None:
        return {"input": input_moderation, "output": failed}
    output = no_results(input_moderation["model"])
    output["results"] = [result for index in sorted(answers) for result in answers[index]["results"]]
    return {"input": input_moderation, "output": output}


def _forced_reading(chat: PreparedChat) -> CallStream | None:
    """A reader of the reply's calls as they are written, for a forced reply to functions (a custom tool's input is
    text inside the JSON, and the deprecated `function_call` has one call), which nothing writes again."""
    plan = chat.tools
    if plan is None or not plan.forced or plan.legacy or plan.custom:
        return None
    return CallStream()


def _opened_reading(chat: PreparedChat) -> OpenedCalls | None:
    """A reader of an unforced reply's calls from where they open, when the engine holds them to a grammar."""
    grammar = chat.params.call_grammar
    if grammar is None:
        return None
    return OpenedCalls.held_by(grammar, chat.functions)


def _opened_whole(chat: PreparedChat, result: ChoiceText) -> OpenedCalls | None:
    """An unforced reply's calls read whole from where they opened, as a stream reads them."""
    opened = _opened_reading(chat)
    if opened is not None:
        opened.feed(result.text, result.tokens)
        opened.close()
    return opened


def _call_piece_delta(piece: CallPiece) -> dict[str, Any]:
    """A call's opening (id, type and name, as OpenAI's first delta of a call) or the next piece of its arguments."""
    if piece.opened:
        opening = {"index": piece.index, "id": new_id("call_"), "type": "function"}
        return {"tool_calls": [{**opening, "function": {"name": piece.text, "arguments": ""}}]}
    return {"tool_calls": [{"index": piece.index, "function": {"arguments": piece.text}}]}


def _call_deltas(message: dict[str, Any], streamed: Sequence[StreamedCall] = ()) -> list[dict[str, Any]]:
    """A finished call as OpenAI streams one: id, type and name first, then the arguments; none for the calls
    `streamed` as they were written (the message's first calls, read by the same reading: `_message`)."""
    if message.get("function_call"):
        call = message["function_call"]
        return [
            {"function_call": {"name": call["name"], "arguments": ""}},
            {"function_call": {"arguments": call["arguments"]}},
        ]
    if message.get("tool_calls"):
        deltas = []
        for position, call in enumerate(message["tool_calls"]):
            if position < len(streamed):
                continue
            if call["type"] == "custom":  # as a function's: the name first, then the input
                custom = call["custom"]
                deltas.append(
                    {
                        "tool_calls": [
                            {
                                "index": position,
                                "id": call["id"],
                                "type": "custom",
                                "custom": {"name": custom["name"], "input": ""},
                            }
                        ]
                    }
                )
                deltas.append({"tool_calls": [{"index": position, "custom": {"input": custom["input"]}}]})
                continue
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
    return []


async def _merged(streams: list[TokenStream], stops: list[str]) -> AsyncIterator[tuple[int, TextDelta]]:
    """The choices' deltas as they come, tagged with the choice index; every slot is freed on the way out."""
    try:
        async for entry in merge([stream_choice(stream, stops) for stream in streams]):
            yield entry
    finally:
        for stream in streams:
            stream.cancel()
