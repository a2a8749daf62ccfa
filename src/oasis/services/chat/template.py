"""Renders chat messages into a prompt with the model's own Jinja chat template (as stored in the GGUF)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.sandbox import SandboxedEnvironment

from oasis.errors import invalid_request


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # Jinja's own tojson escapes <, >, & and ' for HTML, which would change the markup models are shown.
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # a template error (the messages are at fault), as Jinja's own
    if isinstance(value, Iterator):
        value = list(value)  # `map(...)|tojson`: Jinja's map and select give generators
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _GenerationBlock(Extension):
    """Hugging Face's `{% generation %}…{% endgeneration %}` marks the assistant's text for training masks (LFM2.5's
    template); rendering a prompt, it is its body."""

    tags = {"generation"}

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _JoinableUndefined(jinja2.ChainableUndefined):
    """A missing value, and any attribute of it, joined to a string adds nothing, as in llama.cpp's own Jinja:
    Command R+'s template writes every tool parameter's `description` and an object's `additionalProperties`,
    which a tool need not have."""

    def __add__(self, other: Any) -> Any:
        return other if isinstance(other, str) else super().__add__(other)

    def __radd__(self, other: Any) -> Any:
        return other if isinstance(other, str) else super().__radd__(other)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    # Hugging Face's apply_chat_template environment, which these templates are written for, except that lists
    # and dicts the template builds may change (Kimi K2's `.append`), as llama.cpp's own Jinja allows; the
    # sandbox still refuses unsafe attributes, and the messages given are copies made per request.
    environment = SandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        loader=jinja2.BaseLoader(),
        extensions=["jinja2.ext.loopcontrols", _GenerationBlock],
        undefined=_JoinableUndefined,
    )
    environment.filters["tojson"] = _tojson
    # Without autoescaping `safe` only makes a Markup string, and Markup + str escapes the str ("'x'|safe + name"
    # in Functionary's template would show the tools HTML-escaped); templates mean plain text.
    environment.filters["safe"] = str
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return environment.from_string(template)


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    special_tokens: Mapping[str, str],
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """`variables` are further names the template reads (Qwen3's `enable_thinking`)."""
    try:
        return _compile(template).render(
            messages=list(messages),
            tools=list(tools) if tools else None,
            add_generation_prompt=add_generation_prompt,
            **special_tokens,
            **(variables or {}),
        )
    except jinja2.TemplateError as exc:
        # The template itself refuses the conversation (e.g. roles out of order): the caller's input is at fault.
        raise invalid_request(f"The model's chat template refused these messages: {exc}", param="messages") from None
    except TypeError as exc:
        # A template that cannot take what it is given (Hermes 2 Pro's tool_use template loops over `tools`
        # even when none are offered): the model's template, not the server, refuses.
        raise invalid_request(
            f"The model's chat template could not render this request: {exc}", param="messages"
        ) from None
    except RecursionError:
        # Command R+'s type macro recurses forever on a parameter typed "null" (a string is iterable in Jinja).
        raise invalid_request(
            "The model's chat template could not render these tools (it recursed without end).", param="tools"
        ) from None


_PROBE_ID = "123456789"  # Mistral's templates refuse any id but 9 letters and digits
_PROBE_TOOLS = [
    {"type": "function", "function": {"name": "probe_tool", "description": "probe", "parameters": {"type": "object"}}}
]


def _probe(arguments: Any) -> list[dict[str, Any]]:
    call = {"id": _PROBE_ID, "type": "function", "function": {"name": "probe_tool", "arguments": arguments}}
    return [
        {"role": "user", "content": "probe"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": _PROBE_ID, "name": "probe_tool", "content": "probe result"},
    ]


def _shows(template: str, arguments: Any) -> bool:
    try:
        shown = _compile(template).render(
            messages=_probe(arguments), tools=_PROBE_TOOLS, add_generation_prompt=False, bos_token="", eos_token=""
        )
    except Exception:  # e.g. a template joining the arguments to text with `+` is given an object
        return False
    return "probe_key" in shown and "probe_value" in shown


CallArguments = Literal["object", "string", "unshown"]


@lru_cache(maxsize=16)
def call_arguments(template: str) -> CallArguments:
    """How the template wants an earlier call's arguments: as an object (`| tojson`, `.items()`), as the JSON
    string OpenAI clients send (joined to text with `+`), or not at all (it does not show earlier calls).
    Found by rendering, as llama.cpp does."""
    if _shows(template, {"probe_key": "probe_value"}):
        return "object"
    if _shows(template, '{"probe_key": "probe_value"}'):
        return "string"
    return "unshown"
