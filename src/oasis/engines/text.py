"""The text-generation capability: what chat and completions need from an engine, nothing more.

An engine tokenizes, renders its chat template, and streams sampled tokens for a prompt; stop strings,
choices, usage and the wire shapes are the services' job, so every engine behaves the same to clients.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from oasis.engines.base import Engine

FinishReason = Literal["stop", "length"]


class EngineBusy(Exception):
    """The engine's queue is full; the client should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("the engine's queue is full")
        self.retry_after = retry_after


class PromptTooLong(ValueError):
    def __init__(self, prompt_tokens: int, limit: int) -> None:
        super().__init__(f"prompt has {prompt_tokens} tokens; this model's context holds {limit}")
        self.prompt_tokens = prompt_tokens
        self.limit = limit


class UnusableSchema(ValueError):
    """A JSON Schema (a structured output's, a forced call's parameters) that generation cannot be held to."""


# Set in a task that does background work (a batch's requests): engines queue what it asks behind every online
# request, so a running batch never makes an interactive client wait for more than the slot it is waiting on.
background_work: ContextVar[bool] = ContextVar("background_work", default=False)


# A fenced call's wrapping: the fence's opening (a regex, read alike by Python and ECMAScript) and its closing
FENCE_OPEN = r"```(?:json|tool_call|tool_code)?[ \t]{0,2}\n"
FENCE_CLOSE = "```"
# Blank space between a call's JSON tokens, as its grammar allows it (llama.cpp's json-schema-to-grammar: a space,
# or a line break or two and an indent), so that a call written pretty-printed is held too
JSON_SPACE = r"(?: |\n{1,2}[ \t]{0,20})?"
# Where a bare call opens: a call object's (or a list's) beginning up to its name's key; a fenced one, in a fence
BARE_CALL_OPENING = rf'(?:\[{JSON_SPACE})?\{{{JSON_SPACE}"name"{JSON_SPACE}:'
FENCED_CALL_OPENING = FENCE_OPEN + r"[ \n]{0,2}" + BARE_CALL_OPENING


def prefix_pattern(literal: str) -> str:
    """A regex, read alike by Python and ECMAScript, of any beginning of `literal` (the empty one too)."""
    pattern = ""
    for char in reversed(literal):
        pattern = f"(?:{re.escape(char)}{pattern})?"
    return pattern


def closes_a_fence(text: str, index: int, start: int = 0) -> bool:
    """Whether a fence at `index` closes one opened after `start` (a code block's end, not a fenced call's
    opening): the reader and the engine's watch count fences alike."""
    return text.count(FENCE_CLOSE, start, index) % 2 == 1


@dataclass(frozen=True)
class XmlCalls:
    """Calls written as markup around a function's name and each parameter's (llama.cpp's `xml_tool_call_format`):
    what a call grammar writes, and how the readers read a value (a string parameter's as text, any other as JSON)."""

    function: tuple[str, str]  # around the function's name
    parameter: tuple[str, str]  # around a parameter's name
    value: tuple[str, str]  # around its value
    end: str  # the call's closing; "": the wrapping's closing ends it
    # What the readers leave out at a value's ends: a line break at either ("line"), blank space ("strip"), nothing
    trim: Literal["line", "strip", "raw"]
    several: bool = False  # a wrapping may hold several calls
    # Where the family marks a value's kind in its parameter's opening (DeepSeek's DSML, `string="false"`): how that
    # opening ends before a JSON value (`parameter[1]` then ends it before a text value only)
    json_opening_end: str | None = None


# Qwen3-Coder's (Qwen3.5's, Nemotron 3 Nano's, Step 3.5's, Seed-OSS's), MiniMax-M2's, GLM 4.5+'s (and Ling 3's)
QWEN3_CODER_CALLS = XmlCalls(("<function=", ">"), ("<parameter=", ">"), ("", "</parameter>"), "</function>", "line")
MINIMAX_M2_CALLS = XmlCalls(
    ('<invoke name="', '">'), ('<parameter name="', '">'), ("", "</parameter>"), "</invoke>", "strip", several=True
)
GLM_CALLS = XmlCalls(("", ""), ("<arg_key>", "</arg_key>"), ("<arg_value>", "</arg_value>"), "", "raw")
# DeepSeek V3.2's and V4's DSML (the `DSML` tag between full-width bars), in `function_calls` (V3.2) or `tool_calls`
# (V4) tags
DSML = "\uff5cDSML\uff5c"
DSML_CALLS = XmlCalls(
    (f'<{DSML}invoke name="', '">'),
    (f'<{DSML}parameter name="', '" string="true">'),
    ("", f"</{DSML}parameter>"),
    f"</{DSML}invoke>",
    "raw",
    several=True,
    json_opening_end='" string="false">',
)


@dataclass(frozen=True)
class NamedCalls:
    """Calls written as the function's name between markers, then its arguments as JSON: Mistral's
    `[TOOL_CALLS]name[CALL_ID]id[ARGS]{…}`, Kimi K2's `<|tool_call_begin|>functions.name:0<|tool_call_argument_begin|>
    {…}<|tool_call_end|>` in a calls section, DeepSeek's. What a call grammar writes (exactly as the family's template
    does), and how a stream finds each call's name and arguments."""

    arguments: str  # between the name (and its id) and the arguments
    # What opens each call inside the wrapping; None: the wrapping's own opening opens each call (Mistral's)
    each: str | None = None
    prefix: str = ""  # before the name
    call_id: str | None = None  # the marker of an id after the name (the id is optional)
    id_characters: str = "A-Za-z0-9"  # the id's characters, a class that regexes and GBNF read alike
    arguments_end: str = ""  # after the arguments (DeepSeek R1's fence closing)
    closing: str = ""  # what ends each call

    def head(self, name: str) -> str:
        """What a call of the function `name` starts with, up to its id."""
        return (self.each or "") + self.prefix + name


MISTRAL_CALLS = NamedCalls("[ARGS]", call_id="[CALL_ID]")

# OpenAI's harmony (gpt-oss): a call is a message addressed to a function, the recipient in the channel's header
# (`<|channel|>commentary to=functions.name <|constrain|>json<|message|>`) or in the role's (`<|start|>assistant
# to=functions.name<|channel|>commentary json<|message|>`, also where the prompt's `<|start|>assistant` opened it),
# its body the arguments, ended by `<|call|>` (an end-of-generation token). Where a call opens (a regex read alike by
# Python and ECMAScript: `^` is the reply's start, or the start of the tokens llama.cpp replays; a channel's name ends
# at a space, as the reader reads it), and what each call's header is, up to its body, as the stream reads it (named
# as the grammar writes it)
HARMONY_CHANNELS = ("commentary", "analysis")  # a call may be addressed from either, as llama.cpp's grammar allows
_HARMONY_CHANNEL = rf"<\|channel\|>(?:{'|'.join(HARMONY_CHANNELS)})"
HARMONY_CALL_OPENING = rf"(?:(?:<\|start\|>assistant)?{_HARMONY_CHANNEL} |<\|start\|>assistant ?|^ ?)to=functions\."
HARMONY_CALL_HEADER = (
    rf"{HARMONY_CALL_OPENING}(?P<name>[A-Za-z0-9_-]+)(?:{_HARMONY_CHANNEL})?"
    r"(?: ?<\|constrain\|>json| json)?<\|message\|>"
)
HARMONY_CALL_END = "<|call|>"

# Gemma 4's calls: `<|tool_call>call:name{key:value,…}<tool_call|>`, keys bare, a string between `<|"|>` quotes as it
# is written, numbers and literals as JSON's (engines/llamacpp/gemma_grammar.py writes what holds them)
GEMMA_CALL_OPENING = "<|tool_call>"
GEMMA_CALL_HEAD = "call:"
GEMMA_CALL_END = "<tool_call|>"
GEMMA_QUOTE = '<|"|>'
GEMMA_TURN_END = "<turn|>"  # the reader ends a call at the turn's end too


@dataclass(frozen=True)
class CallGrammar:
    """A reply written freely until it opens a tool call, and the call then held to its functions' schemas (the
    lazy grammar llama-server gives `tool_choice: auto`): a call that opens is valid as written, so a stream can
    send its arguments piece by piece."""

    schema: Mapping[str, object]  # one call, `{"name": ..., "arguments": ...}` (or as the family's keys name them)
    # A regex, read alike by Python and ECMAScript, for where the family's own calls open: the grammar starts
    # there. None: a family whose own calls are not held, though a fenced or a bare one may be
    opening: str | None
    # The calls' wrapping (`<tool_call>`, `</tool_call>`; a family may have no closing tag); None: bare JSON
    tags: tuple[str, str | None] | None = None
    # A call may also open in a Markdown fence (FENCE_OPEN), as small models write them whatever their template
    # teaches: held once it names an offered function, so that other JSON in a fence stays text
    fenced: bool = False
    # A bare call (BARE_CALL_OPENING) that opens the answer also opens a call, once it names an offered function
    # whole (small models write them so too)
    bare: bool = False
    # Calls written as the function's name between markers, then the arguments (`NamedCalls`), in `tags`
    named: NamedCalls | None = None
    # The family's calls are XML-like markup in its tags (Qwen3-Coder's `<function=name>` and `<parameter=key>`,
    # GLM's, MiniMax-M2's): held to each function's parameters, in the order they are declared
    xml: XmlCalls | None = None
    # The family's calls are harmony messages addressed to a function (`HARMONY_CALL_OPENING`), one a reply
    harmony: bool = False
    # The family's calls are Gemma 4's, in its tags: `call:name` and the arguments in Gemma's own syntax
    gemma4: bool = False
    # The family's calls are a pythonic list in its tags (LFM2's `[name(key=value, …)]`)
    pythonic: bool = False
    # The family's calls are each an object of one key, the function's name, its value the arguments (Apertus's
    # `[{"get_weather": {…}}]`), the tags' body one JSON value
    keyed_by_name: bool = False
    repeats: bool = False  # further calls may follow (parallel calls)
    at_start: bool = False  # the family's own call opens only where the answer starts
    thinking: tuple[str, str] | None = None  # the thinking block's tags: a call does not open inside it
    thinking_open: bool = False  # the prompt left the reply inside the thinking block
    # Markup that also ends the thinking, and begins the answer (a call opened inside it: `ThinkTags.ended_by`)
    thinking_ended_by: tuple[str, ...] = ()
    names: tuple[str, ...] = ()  # the functions a call may name


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    seed: int | None = None
    # None: no log probabilities; 0..20: the chosen token's plus that many alternatives.
    top_logprobs: int | None = None
    # Never end at an end-of-generation token: only max_tokens or a stop string ends (vLLM's `ignore_eos`).
    ignore_eos: bool = False
    # Output must be JSON: any JSON object (`{}`), or a document that the given JSON Schema accepts.
    json_schema: Mapping[str, object] | None = None
    # Special tokens the reply's format reads (a tool-call or thinking marker): their text is generated, where
    # other special tokens come out as nothing.
    markup_tokens: frozenset[int] = frozenset()
    call_grammar: CallGrammar | None = None


@dataclass(frozen=True)
class TokenLogprob:
    token: int
    logprob: float


@dataclass(frozen=True)
class SampledToken:
    token: int
    piece: bytes
    logprob: float | None = None
    top_logprobs: tuple[TokenLogprob, ...] = ()
    # Set on the last token of a sequence: why it ended (end-of-generation token, or max_tokens).
    finish_reason: FinishReason | None = None
    # Set on the token that opened a tool call (`SamplingParams.call_grammar`): what follows is held to the grammar.
    call_opened: bool = False


class TokenStream(Protocol):
    """One sequence being generated. Iterate it for tokens; `aclose` cancels it and frees its slot."""

    def __aiter__(self) -> TokenStream: ...

    async def __anext__(self) -> SampledToken: ...

    def cancel(self) -> None:
        """Stops the sequence and frees its slot; safe to call at any time, more than once."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TextEngine(Engine, Protocol):
    @property
    def context_length(self) -> int:
        """Tokens one sequence may hold, prompt and completion together."""
        ...

    @property
    def chat_template(self) -> str | None: ...

    @property
    def tool_use_template(self) -> str | None:
        """The model's own template for requests that offer tools, where it names one apart (`tool_use`)."""
        ...

    @property
    def special_tokens(self) -> Mapping[str, str]:
        """`bos_token`, `eos_token` and the like, as the chat template expects them."""
        ...

    @property
    def fim_tokens(self) -> tuple[int, int, int] | None:
        """(prefix, suffix, middle) token ids when the model does fill-in-the-middle."""
        ...

    @property
    def max_waiting(self) -> int:
        """Sequences the queue holds beyond the running ones: a request that needs more at once never fits."""
        ...

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]: ...

    def detokenize(self, tokens: list[int]) -> str: ...

    def token_piece(self, token: int) -> bytes: ...

    def is_valid_token(self, token: int) -> bool: ...

    def check_schema(self, schema: Mapping[str, object]) -> None:
        """Raises UnusableSchema when generation cannot be held to `schema` (generate checks it too)."""
        ...

    def generate(self, prompt: list[int], params: SamplingParams) -> TokenStream:
        """Queues the sequence at once (raising EngineBusy when the queue is full, PromptTooLong when it cannot
        fit) and returns its token stream; the last token carries finish_reason."""
        ...

    async def score(self, prompt: list[int], top_logprobs: int) -> list[SampledToken]:
        """Log probabilities of each prompt token given the ones before it (the first has none)."""
        ...
