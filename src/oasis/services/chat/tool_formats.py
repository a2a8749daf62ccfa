"""The markups models write tool calls in, and reading calls out of a reply.

Each family of chat templates teaches its models one markup: Hermes and Qwen `<tool_call>` tags (Qwen3-Coder
with `<function=…>` inside), Llama 3.x bare JSON with `parameters` (and `<|python_tag|>`), Mistral
`[TOOL_CALLS]` (a JSON list, or `name[ARGS]{…}`), Granite `<|tool_call|>`, DeepSeek's tool tokens, Command-R's
`<|START_ACTION|>`, Functionary's `<function=name>`, LFM2 and Llama 4 pythonic lists. The family comes from the
template, as llama.cpp's common/chat detects it, or from the model's `tool_parser` option. Small models drift
into what others write, so every family also reads the common forms: a JSON call (bare or in a list), a
```json fence holding one, and `<tool_call>` tags.

A reply is read left to right as text and call regions. A region whose calls do not all name offered
functions with object arguments stays text, markup and all: a reply shaped like a call to a tool that was not
offered is content. A stream runs the same reading on the text so far: text before the first region still
being written (or a tail that may grow into one) is final and can go out.
"""

from __future__ import annotations

import ast
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oasis.engines.text import (
    DSML,
    GEMMA_CALL_END,
    GEMMA_CALL_OPENING,
    GEMMA_QUOTE,
    GEMMA_TURN_END,
    closes_a_fence,
)


def _deepseek(name: str) -> str:
    """DeepSeek's tool tokens, written with a full-width bar and a lower block as the word separator."""
    return "<\uff5c" + name.replace(" ", "\u2581") + "\uff5c>"


DEEPSEEK_CALLS_BEGIN, DEEPSEEK_CALLS_END = _deepseek("tool calls begin"), _deepseek("tool calls end")
DEEPSEEK_CALL_BEGIN, DEEPSEEK_CALL_END = _deepseek("tool call begin"), _deepseek("tool call end")
DEEPSEEK_TOOL_SEP = _deepseek("tool sep")


@dataclass(frozen=True)
class ParsedCall:
    name: str
    arguments: str  # a JSON object, as OpenAI sends `function.arguments`


@dataclass(frozen=True)
class _Region:
    end: int
    calls: list[ParsedCall] | None  # None: not calls after all, the text stays content; []: markup left out


Reader = Callable[[str, "re.Match[str]", bool, Mapping[str, Any]], "_Region | None"]


@dataclass(frozen=True)
class _Markup:
    start: re.Pattern[str]  # where a region begins
    could_start: re.Pattern[str]  # a tail that may still grow into `start` (fullmatch)
    read: Reader  # the region from `start`'s match; None while it is still being written (never when final)
    closes: Callable[[str, int], bool] | None = None  # a match at this index ends an earlier region instead
    # Channel markup a reply carries whether or not tools were offered (Kimi K3's answer channel, Cohere's answer
    # wrappers): read, and left out, in every reply.
    wraps_answer: bool = False

    def find(self, text: str, position: int) -> re.Match[str] | None:
        match = self.start.search(text, position)
        while match is not None and self.closes is not None and self.closes(text, match.start()):
            match = self.start.search(text, match.end())
        return match


@dataclass(frozen=True)
class ToolFormat:
    name: str
    markups: tuple[_Markup, ...]
    markers: tuple[str, ...] = ()  # marker strings that may be special tokens
    short_ids: bool = False  # Mistral templates refuse tool_call ids other than 9 letters and digits


def reads_fenced_calls(tool_format: ToolFormat) -> bool:
    """Whether a call in a ```json fence is read as a call in this family, apart from the family's own markup."""
    return _FENCE in tool_format.markups and tool_format.name not in _OWN_FENCES


def reads_bare_calls(tool_format: ToolFormat) -> bool:
    """Whether a bare JSON call is read as a call in this family."""
    return _BARE_JSON in tool_format.markups


def answer_wrappers(tool_format: ToolFormat) -> ToolFormat | None:
    """The family's channel markup alone, to read a reply that may hold no calls (no tools offered); None when
    the family has none."""
    wrappers = tuple(markup for markup in tool_format.markups if markup.wraps_answer)
    return ToolFormat(tool_format.name, wrappers) if wrappers else None


@dataclass
class Reading:
    """A reply read so far: its content and calls, from the text before `decided`; the rest may still become
    a call (a stream holds it back)."""

    content: str = ""
    calls: list[ParsedCall] = field(default_factory=list)
    decided: int = 0
    pending: _Markup | None = None  # the markup of a region that starts at `decided` and is still being written
    spans: list[tuple[int, int]] = field(default_factory=list)  # where in the text the content came from


# --- reading values -------------------------------------------------------------------------------------------

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"\s*")


class _Unfinished:
    """A JSON value that a stream is still writing."""


_UNFINISHED = _Unfinished()
_UNFINISHED_TAIL = 6  # `tru`, `-12.`, `\u00e`: a value cut this close to the end may still complete


def json_at(text: str, position: int, final: bool = True) -> tuple[Any, int] | _Unfinished | None:
    """The JSON value starting at `position` (after whitespace) and where it ends; None when it is broken,
    `_UNFINISHED` when it fails only because a stream has not written its end yet."""
    position = _WHITESPACE.match(text, position).end()  # type: ignore[union-attr]
    try:
        return _DECODER.raw_decode(text, position)
    except json.JSONDecodeError as error:
        cut_short = error.msg.startswith("Unterminated string") or error.pos >= len(text) - _UNFINISHED_TAIL
        return _UNFINISHED if cut_short and not final else None


def _json_calls(text: str, begin: int, final: bool, broken_end: int) -> _Region | None:
    """A JSON call, or a list of them, starting at `begin`; when the JSON is broken, a region of text ending at
    `broken_end` (reading goes on after it); None while a stream is still writing it."""
    found = json_at(text, begin, final)
    if isinstance(found, _Unfinished):
        return None
    if found is None:
        return _Region(broken_end, None)
    value, end = found
    calls = [_call_from_json(item) for item in (value if isinstance(value, list) else [value])]
    return _Region(end, None if None in calls or not calls else calls)  # type: ignore[arg-type]


def _json_values(text: str) -> list[Any] | None:
    """One or more JSON values separated by whitespace, commas or semicolons (how models list calls)."""
    values: list[Any] = []
    position = 0
    while True:
        position = re.compile(r"[\s,;]*").match(text, position).end()  # type: ignore[union-attr]
        if position >= len(text):
            return values or None
        found = json_at(text, position)
        if not isinstance(found, tuple):
            return None
        value, position = found
        values.extend(value if isinstance(value, list) else [value])


def _arguments(value: Any) -> str | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else None


def _call_from_json(value: Any) -> ParsedCall | None:
    """{"name", "arguments" | "parameters"}, OpenAI's {"function": {...}}, Command-R's {"tool_name", ...}."""
    if not isinstance(value, dict):
        return None
    function = value.get("function")
    if isinstance(function, dict):
        value = function
    name = value.get("name", value.get("tool_name", function if isinstance(function, str) else None))
    if not isinstance(name, str):
        return None
    arguments = _arguments(value.get("arguments", value.get("parameters", {})))
    return ParsedCall(name, arguments) if arguments is not None else None


def _calls_from_json(text: str) -> list[ParsedCall] | None:
    values = _json_values(text)
    if values is None:
        return None
    calls = [_call_from_json(value) for value in values]
    return None if any(call is None for call in calls) else calls  # type: ignore[return-value]


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Name) and node.id in ("true", "false", "null"):  # JSON spellings in Python syntax
        return {"true": True, "false": False, "null": None}[node.id]
    if isinstance(node, ast.List):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(key): _literal(item) for key, item in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    return ast.literal_eval(node)


def python_value(text: str) -> Any:
    """A keyword's value in a pythonic call, as the reader reads it in the whole call. Raises ValueError where it is
    no value the reader reads."""
    try:
        return _literal(ast.parse(text.strip(), mode="eval").body)
    except (ValueError, TypeError, SyntaxError) as exc:
        raise ValueError(str(exc)) from None


def _calls_from_python(text: str) -> list[ParsedCall] | None:
    """`[get_weather(city="Paris"), get_time()]` or a single call, keyword arguments only."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    nodes = tree.elts if isinstance(tree, ast.List) else [tree]
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call) or node.args:
            return None
        name = ast.unparse(node.func)
        if name.endswith(".call"):  # Llama 3.1's built-in tools: brave_search.call(query=...)
            name = name[: -len(".call")]
        try:
            arguments = {keyword.arg: _literal(keyword.value) for keyword in node.keywords if keyword.arg}
        except (ValueError, TypeError, SyntaxError):
            return None
        calls.append(ParsedCall(name, json.dumps(arguments, ensure_ascii=False)))
    return calls or None


def _loose(text: str) -> Any:
    """The JSON value a text holds, else the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parameter_value(value: str, name: str, parameter: str, functions: Mapping[str, Any]) -> Any:
    """A parameter written as text (XML-style calls): a string where the schema says so, else its JSON."""
    return value if is_text_parameter(name, parameter, functions) else _loose(value)


def is_text_parameter(name: str, parameter: str, functions: Mapping[str, Any]) -> bool:
    """Whether an XML-style call's parameter is written as text (its schema says it is a string), not as JSON."""
    schema = (functions.get(name) or {}).get("parameters")
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    found = properties.get(parameter) if isinstance(properties, Mapping) else None
    return isinstance(found, Mapping) and found.get("type") == "string"


_XML_FUNCTION = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|$)", re.DOTALL)
_XML_PARAMETER = re.compile(r"<parameter=([^>\s]+)>\n?(.*?)\n?(?:</parameter>|$)", re.DOTALL)


def _calls_from_xml(text: str, functions: Mapping[str, Any]) -> list[ParsedCall] | None:
    """Qwen3-Coder's `<function=name><parameter=key>value</parameter></function>`."""
    calls = []
    for name, body in _XML_FUNCTION.findall(text):
        arguments = {key: parameter_value(value, name, key, functions) for key, value in _XML_PARAMETER.findall(body)}
        calls.append(ParsedCall(name, json.dumps(arguments, ensure_ascii=False)))
    return calls or None


def _calls_inside(text: str, functions: Mapping[str, Any]) -> list[ParsedCall] | None:
    """What a wrapper (tags, a fence) holds: JSON calls, XML-style calls, pythonic calls or a fenced one."""
    text = text.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:  # a fence inside a wrapper
        body = text[3:-3]
        text = body[re.compile(r"[A-Za-z_]*").match(body).end() :].strip()  # type: ignore[union-attr]
    if text.startswith("<function="):
        return _calls_from_xml(text, functions)
    keyed = _KEYED_CALL.fullmatch(text)
    if keyed:
        return _calls_from_keys(keyed, functions)
    return _calls_from_json(text) or _calls_from_python(text)


# GLM 4.5+: `name` then `<arg_key>k</arg_key><arg_value>v</arg_value>` pairs
_KEYED_CALL = re.compile(
    r"([A-Za-z_][\w.-]*)\s*((?:<arg_key>.*?</arg_key>\s*<arg_value>.*?</arg_value>\s*)*)", re.DOTALL
)
_KEYED_PAIR = re.compile(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)


def _calls_from_keys(keyed: re.Match[str], functions: Mapping[str, Any]) -> list[ParsedCall]:
    name = keyed.group(1)
    arguments = {
        key.strip(): parameter_value(value, name, key.strip(), functions)
        for key, value in _KEYED_PAIR.findall(keyed.group(2))
    }
    return [ParsedCall(name, json.dumps(arguments, ensure_ascii=False))]


# --- regions --------------------------------------------------------------------------------------------------


# What a wrapper's body starts with when it holds calls: JSON, an XML-style call, a fence, a pythonic list.
# (A name alone before the closing tag: GLM 4.7's call without arguments.)
_BODY_START = re.compile(r"\s*(?:[{\[<`]|[A-Za-z_][\w.-]*(?:\(|\s*<arg_key>|\s*</|\s*$))")
_BODY_UNDECIDED = re.compile(r"\s*(?:[A-Za-z_][\w.-]*\s*(?:</?[a-z_]{0,9})?)?")  # a name, `<arg_key` on its way


def _until(close: str | None) -> Reader:
    """A wrapper read to `close` (or, without one, to a complete JSON value); at the end of a reply an
    unclosed wrapper holds what was written. A wrapper whose body does not start like calls (the tag named
    in prose) is only its opening, as text."""

    def read(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
        begin = match.end()
        if not _BODY_START.match(text, begin):
            if not final and _BODY_UNDECIDED.fullmatch(text, begin):
                return None
            return _Region(begin, None)
        if close is None:
            return _json_calls(text, begin, final, begin)
        end = text.find(close, begin)
        again = text.find(match.group(0), begin, end if end >= 0 else len(text))
        if again >= 0:  # opened again before closing: the first one was not a call
            return _Region(begin, None)
        if end < 0:
            return _Region(len(text), _calls_inside(text[begin:], functions)) if final else None
        return _Region(end + len(close), _calls_inside(text[begin:end], functions))

    return read


def _read_json_after(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """A JSON call (or a list of them) right after the markup."""
    return _json_calls(text, match.end(), final, match.end())


def _read_bare_json(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    return _json_calls(text, match.start(), final, match.end())  # broken: its opening is text


def _read_python_list(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    if not final and text.find("]", match.end()) < 0:
        return None  # cannot have closed yet: spare a scan per streamed token
    end = _closing_bracket(text, match.start())
    if end is None:
        return _Region(len(text), None) if final else None
    return _Region(end, _calls_from_python(text[match.start() : end]))


def _closing_bracket(text: str, start: int) -> int | None:
    """Where the bracket opened at `start` closes (strings skipped), or None."""
    depth, quote, previous = 0, "", ""
    position = start
    while position < len(text):
        char = text[position]
        if quote:
            if char == "\\":
                position += 1
            elif char == quote:
                quote = ""
        elif char == '"' or (char == "'" and previous in "=([,:"):
            quote = char  # an apostrophe in prose ("it's") opens no string
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return position + 1
        if not char.isspace():
            previous = char
        position += 1
    return None


def _read_python_tag(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """Llama 3.x: `<|python_tag|>` then JSON calls separated by `;`, or a built-in `name.call(...)`, to the end."""
    if not final:
        return None
    body = text[match.end() :]
    return _Region(len(text), _calls_from_json(body) or _calls_from_python(body))


_MISTRAL_NAMED = re.compile(r"\s*([A-Za-z0-9_.-]+)(?:\[CALL_ID\]([A-Za-z0-9]+))?\[ARGS\]")
_MISTRAL_UNFINISHED = re.compile(r"\s*[A-Za-z0-9_.-]*(?:\[CALL_ID\][A-Za-z0-9]*)?(?:\[[A-Z_]*)?")


def _read_mistral(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """`[TOOL_CALLS][{"name", "arguments", "id"}, …]` (Nemo) or `[TOOL_CALLS]name[ARGS]{…}` (Magistral,
    Devstral; `[CALL_ID]id` before `[ARGS]` in Mistral Small 3.2), one marker per call."""
    named = _MISTRAL_NAMED.match(text, match.end())
    if named is None:
        if not final and _MISTRAL_UNFINISHED.fullmatch(text, match.end()):
            return None  # a name still being written
        return _json_calls(text, match.end(), final, match.end())
    found = json_at(text, named.end(), final)
    if isinstance(found, _Unfinished):
        return None
    if found is None:
        return _Region(named.end(), None)
    value, end = found
    arguments = _arguments(value)
    return _Region(end, [ParsedCall(named.group(1), arguments)] if arguments is not None else None)


_DEEPSEEK_CALL = re.compile(
    rf"{DEEPSEEK_CALL_BEGIN}(?:function{DEEPSEEK_TOOL_SEP})?([^\n<]+?)\s*(?:{DEEPSEEK_TOOL_SEP}|\n)\s*(?:```(?:json)?\s*)?"
    rf"(.*?)\s*(?:```\s*)?{DEEPSEEK_CALL_END}",
    re.DOTALL,
)


def _read_deepseek(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """R1: call-begin, `function`, tool-sep, the name, then the arguments in a ```json fence, call-end; V3.1:
    call-begin, the name, tool-sep, the arguments; each call inside calls-begin ... calls-end."""
    end = text.find(DEEPSEEK_CALLS_END, match.end())
    if end < 0 and not final:
        return None
    stop = len(text) if end < 0 else end + len(DEEPSEEK_CALLS_END)
    calls = []
    for name, body in _DEEPSEEK_CALL.findall(text[match.end() : stop]):
        arguments = _arguments(body)
        if arguments is None:
            return _Region(stop, None)
        calls.append(ParsedCall(name.strip(), arguments))
    return _Region(stop, calls or None)


_KIMI_CALL = re.compile(
    r"<\|tool_call_begin\|>\s*(?:functions\.)?([\w.-]+?)(?::\d+)?\s*<\|tool_call_argument_begin\|>(.*?)"
    r"(?:<\|tool_call_end\|>|$)",
    re.DOTALL,
)


def _read_kimi(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """Kimi K2: in a calls section, `<|tool_call_begin|>functions.name:0<|tool_call_argument_begin|>{…}
    <|tool_call_end|>` per call."""
    end = text.find("<|tool_calls_section_end|>", match.end())
    if end < 0 and not final:
        return None
    stop = len(text) if end < 0 else end + len("<|tool_calls_section_end|>")
    calls = []
    for name, body in _KIMI_CALL.findall(text[match.end() : stop]):
        arguments = _arguments(body.strip())
        if arguments is None:
            return _Region(stop, None)
        calls.append(ParsedCall(name, arguments))
    return _Region(stop, calls or None)


def _read_kimi_call(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """Kimi K2 Thinking may write a call without its section: `<|tool_call_begin|>…` to the call's end marker, to
    the next call, or to the end of the reply."""
    end = text.find("<|tool_call_end|>", match.end())
    following = text.find("<|tool_call_begin|>", match.end())
    if end >= 0 and (following < 0 or end < following):
        stop = end + len("<|tool_call_end|>")
    elif following >= 0:
        stop = following
    elif final:
        stop = len(text)
    else:
        return None
    found = _KIMI_CALL.match(text[match.start() : stop])
    arguments = _arguments(found.group(2).strip()) if found else None
    if found is None or arguments is None:
        return _Region(stop, None)
    return _Region(stop, [ParsedCall(found.group(1), arguments)])


def _read_function_tag(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """Functionary v3.1: `<function=name>{…}</function>`; Qwen3-Coder without its `<tool_call>` wrapper."""
    end = text.find("</function>", match.end())
    if end < 0 and not final:
        return None
    stop = len(text) if end < 0 else end + len("</function>")
    body = text[match.end() : end if end >= 0 else len(text)]
    if body.lstrip().startswith("<parameter="):
        return _Region(stop, _calls_from_xml(text[match.start() : stop], functions))
    arguments = _arguments(body.strip())
    return _Region(stop, [ParsedCall(match.group(1), arguments)] if arguments is not None else None)


def _block(close: str, parse: Callable[[str, Mapping[str, Any]], list[ParsedCall] | None]) -> Reader:
    """A region from its opening to `close` (or, at the end of a reply, to the end), its body read by `parse`."""

    def read(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
        end = text.find(close, match.end())
        if end < 0 and not final:
            return None
        stop = len(text) if end < 0 else end + len(close)
        return _Region(stop, parse(text[match.end() : end if end >= 0 else len(text)], functions))

    return read


def _dropped(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """Markup that carries no call and no content (a channel's opening or closing): left out."""
    return _Region(match.end(), [])


def _invokes(invoke: re.Pattern[str], parameter: re.Pattern[str], value: Callable[..., Any]) -> Callable[..., Any]:
    """XML-style calls: each `invoke` match is (name, body), each `parameter` match in a body (key, [attribute,]
    value); `value(raw, name, key, functions, *attributes)` types a value."""

    def parse(body: str, functions: Mapping[str, Any]) -> list[ParsedCall] | None:
        calls = []
        for name, inner in invoke.findall(body):
            arguments = {}
            for found in parameter.findall(inner):
                key, *attributes, raw = found if isinstance(found, tuple) else (found,)
                arguments[key] = value(raw, name, key, functions, *attributes)
            calls.append(ParsedCall(name, json.dumps(arguments, ensure_ascii=False)))
        return calls or None

    return parse


def _schema_typed(raw: str, name: str, key: str, functions: Mapping[str, Any], *_: str) -> Any:
    return parameter_value(raw.strip(), name, key, functions)


_DSML = "<" + DSML


def _dsml_value(raw: str, name: str, key: str, functions: Mapping[str, Any], string: str = "") -> Any:
    """DeepSeek V3.2+: `string="true"` marks a raw string, `"false"` a JSON value."""
    if string == "true":
        return raw
    return parameter_value(raw, name, key, functions)


_CDATA = re.compile(r"<!\[CDATA\[(.*)\]\]>", re.DOTALL)


def _cdata_value(raw: str, name: str, key: str, functions: Mapping[str, Any], *_: str) -> Any:
    """MiniCPM5 wraps a value holding `<`, `&` or a line break in CDATA."""
    wrapped = _CDATA.fullmatch(raw.strip())
    return wrapped.group(1) if wrapped else parameter_value(raw, name, key, functions)


def _kimi_k3_value(raw: str, name: str, key: str, functions: Mapping[str, Any], kind: str = "") -> Any:
    """Kimi K3's `type` attribute: `string` values are raw, every other kind is JSON."""
    return raw if kind == "string" else _loose(raw)


class _GemmaSyntax(ValueError):
    pass


_GEMMA_DEPTH = 64  # nesting deeper than any real call's arguments is not one


def _gemma_value(text: str, position: int, depth: int = 0) -> tuple[Any, int]:
    """One value of Gemma 4's call syntax: `<|"|>`-quoted raw strings, `{key:value,…}` with bare keys, `[…]`,
    and JSON's numbers and literals written bare. Raises _GemmaSyntax for anything else, so that reading always
    advances or stops."""
    if depth > _GEMMA_DEPTH:
        raise _GemmaSyntax("nested too deep")
    while position < len(text) and text[position].isspace():
        position += 1
    if text.startswith(GEMMA_QUOTE, position):
        end = text.find(GEMMA_QUOTE, position + len(GEMMA_QUOTE))
        if end < 0:
            raise _GemmaSyntax("an unclosed string")
        return text[position + len(GEMMA_QUOTE) : end], end + len(GEMMA_QUOTE)
    if text.startswith("{", position) or text.startswith("[", position):
        is_object = text[position] == "{"
        items: list[Any] = []
        keyed: dict[str, Any] = {}
        closing = "}" if is_object else "]"
        position += 1
        while True:
            while position < len(text) and text[position] in " \t\n,":
                position += 1
            if text.startswith(closing, position):
                return (keyed if is_object else items), position + 1
            if position >= len(text):
                raise _GemmaSyntax("an unclosed " + closing)
            if is_object:
                colon = text.find(":", position)
                if colon < 0:
                    raise _GemmaSyntax("a key without a value")
                key = text[position:colon].strip().removeprefix(GEMMA_QUOTE).removesuffix(GEMMA_QUOTE)
                keyed[key], position = _gemma_value(text, colon + 1, depth + 1)
            else:
                item, position = _gemma_value(text, position, depth + 1)
                items.append(item)
    bare = re.compile(r"[^,}\]]*").match(text, position)
    assert bare is not None
    word = bare.group(0).strip()
    if not word:
        raise _GemmaSyntax("a value missing")  # `[1}`: a stray bracket, which would not move the reading on
    try:
        value = json.loads(word)
    except json.JSONDecodeError:
        return word, bare.end()
    # (`1e999` is no JSON number a client reads: the word as written)
    return (word if isinstance(value, float) and not math.isfinite(value) else value), bare.end()


def _read_late_thought(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """A closed thinking block after the answer began is left out; one the reply ended inside stays, as text."""
    end = text.find("<channel|>", match.end())
    if end < 0:
        return None if not final else _Region(match.end(), None)
    return _Region(end + len("<channel|>"), [])


_GEMMA_CALL = re.compile(r"\s*:?call:([\w.-]+)\s*(?=\{)")
_GEMMA_ENDS = (GEMMA_CALL_END, GEMMA_TURN_END)


def _read_gemma(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """Gemma 4: `<|tool_call>call:name{key:value,…}<tool_call|>`, one call per opening."""
    named = _GEMMA_CALL.match(text, match.end())
    ends = [at for at in (text.find(marker, match.end()) for marker in _GEMMA_ENDS) if at >= 0]
    if not ends and not final:
        return None
    end = min(ends) if ends else len(text)
    stop = end + len(next((m for m in _GEMMA_ENDS if text.startswith(m, end)), ""))
    if named is None or named.end() > end:
        return _Region(stop, None)
    try:
        arguments, after = _gemma_value(text[:end], named.end())  # a value cannot run past the call's end
    except _GemmaSyntax:
        return _Region(stop, None)
    if text[after:end].strip() or not isinstance(arguments, dict):
        return _Region(stop, None)
    return _Region(stop, [ParsedCall(named.group(1), json.dumps(arguments, ensure_ascii=False))])


def _calls_keyed_by_name(body: str, functions: Mapping[str, Any]) -> list[ParsedCall] | None:
    """Apertus: a JSON list of `{"name": {arguments}}` objects."""
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        return None
    calls = []
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict) or len(item) != 1:
            return None
        ((name, arguments),) = item.items()
        if not isinstance(arguments, dict):
            return None
        calls.append(ParsedCall(name, json.dumps(arguments, ensure_ascii=False)))
    return calls or None


_KIMI_K3_CALL = re.compile(r'<\|open\|>call tool="([^"]+)"[^<]*?<\|sep\|>(.*?)<\|close\|>call<\|sep\|>', re.DOTALL)
_KIMI_K3_ARGUMENT = re.compile(
    r'<\|open\|>argument key="([^"]+)"(?: type="([a-z]+)")?<\|sep\|>(.*?)<\|close\|>argument<\|sep\|>', re.DOTALL
)
_KIMI_K3_TOOLS = _block("<|close|>tools<|sep|>", _invokes(_KIMI_K3_CALL, _KIMI_K3_ARGUMENT, _kimi_k3_value))


def _read_kimi_k3(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """Kimi K3's channels: the answer between `response` tags (left out), calls in the `tools` section."""
    if match.group(0) == "<|open|>tools<|sep|>":
        return _KIMI_K3_TOOLS(text, match, final, functions)
    return _dropped(text, match, final, functions)


_RECIPIENT_NEXT = re.compile(r">>>")


def _read_recipient(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """Functionary v3.2: each segment names its recipient, `all` (the user: what follows is content) or a
    function (a JSON object of arguments; the code itself for `python`). The prompt ends with `>>>`, so the
    reply's first segment comes without it."""
    name = match.group(1)
    if name == "all":
        return _Region(match.end(), [])
    found = json_at(text, match.end(), final)
    if isinstance(found, _Unfinished):
        return None
    if isinstance(found, tuple) and isinstance(found[0], dict):
        return _Region(found[1], [ParsedCall(name, json.dumps(found[0], ensure_ascii=False))])
    if name == "python" and name in functions:  # raw code, to the next segment or the end
        following = _RECIPIENT_NEXT.search(text, match.end())
        if following is None and not final:
            return None
        end = following.start() if following else len(text)
        return _Region(end, [ParsedCall(name, json.dumps({"code": text[match.end() : end]}, ensure_ascii=False))])
    return _Region(match.end(), None)


_M3 = "]<]minimax[>["
_M3_TAG = re.compile(r'<(/?)([\w.-]+)((?:\s+[\w-]+="[^"]*")*)\s*>', re.DOTALL)


class _M3Element:
    def __init__(self, tag: str, attributes: str) -> None:
        self.tag, self.attributes = tag, attributes
        self.children: list[_M3Element] = []
        self.text = ""

    def value(self, typed: Callable[[str], Any]) -> Any:
        if not self.children:
            return typed(self.text)
        if all(child.tag == "item" for child in self.children):
            return [child.value(_loose) for child in self.children]
        return {child.tag: child.value(_loose) for child in self.children}


def _typed_as(function: str, key: str, functions: Mapping[str, Any]) -> Callable[[str], Any]:
    return lambda text: parameter_value(text, function, key, functions)


def _calls_m3(body: str, functions: Mapping[str, Any]) -> list[ParsedCall] | None:
    """MiniMax-M3: every tag follows the `]<]minimax[>[` marker, so a value may hold any text; parameters are
    elements named after themselves, objects nest, arrays are `<item>`s."""
    root = _M3Element("", "")
    stack = [root]
    for piece in body.split(_M3)[1:]:
        tag = _M3_TAG.match(piece)
        if tag is None:
            return None
        closing, name, attributes = tag.groups()
        if closing:
            if len(stack) < 2 or stack[-1].tag != name:
                return None
            stack.pop()
        else:
            element = _M3Element(name, attributes)
            stack[-1].children.append(element)
            stack.append(element)
        stack[-1].text += piece[tag.end() :] if not closing else ""
    if len(stack) != 1:
        return None
    calls = []
    for invoke in root.children:
        named = re.search(r'name="([^"]+)"', invoke.attributes)
        if invoke.tag != "invoke" or named is None:
            return None
        function = named.group(1)
        arguments = {
            parameter.tag: parameter.value(_typed_as(function, parameter.tag, functions))
            for parameter in invoke.children
        }
        calls.append(ParsedCall(function, json.dumps(arguments, ensure_ascii=False)))
    return calls or None


# --- the markups ----------------------------------------------------------------------------------------------


def _prefixes(literal: str, then: str = "") -> re.Pattern[str]:
    """Matches every proper beginning of `literal` (and, with `then`, the literal followed by that)."""
    options = [re.escape(literal[:size]) for size in range(1, len(literal))]
    return re.compile("|".join(options + ([re.escape(literal) + then] if then else [])))


def _tagged(open_tag: str, close_tag: str | None) -> _Markup:
    return _Markup(re.compile(re.escape(open_tag)), _prefixes(open_tag), _until(close_tag))


_BARE_JSON = _Markup(
    re.compile(r'(?:\[\s*)?\{\s*"(?:name|type|function|tool_name)"\s*:'),
    re.compile(r'\[\s*|(?:\[\s*)?\{\s*(?:"[a-z_]*"?\s*)?'),
    _read_bare_json,
)


_FENCE = _Markup(
    re.compile(r"```[ \t]*(?:json|tool_call|tool_code)?[ \t]*\n"),
    re.compile(r"`{1,3}[ \t]*[A-Za-z_]*[ \t]*"),
    _until("```"),
    closes_a_fence,
)
_HERMES = _tagged("<tool_call>", "</tool_call>")
# Families whose own markup writes a fence (DeepSeek R1's arguments, Command R+'s `Action:`): a fence there is theirs
_OWN_FENCES = frozenset({"deepseek", "command_r_plus"})
_PYTHON_LIST = _Markup(
    re.compile(r"\[\s*[A-Za-z_][\w.]*\("), re.compile(r"\[\s*(?:[A-Za-z_][\w.]*)?"), _read_python_list
)
_FUNCTION_TAG = _Markup(re.compile(r"<function=([^>\s]+)>"), _prefixes("<function=", r"[^>\s]*"), _read_function_tag)
_COMMON = (_HERMES, _FENCE, _BARE_JSON)


def _literal_markup(literals: tuple[str, ...], read: Reader, *, wraps_answer: bool = False) -> _Markup:
    """A markup that opens with one of `literals`."""
    return _Markup(
        re.compile("|".join(re.escape(literal) for literal in literals)),
        re.compile("|".join(_prefixes(literal).pattern for literal in literals)),
        read,
        wraps_answer=wraps_answer,
    )


_DSML_PARSE = _invokes(
    re.compile(re.escape(_DSML) + r'invoke name="([^"]+)">(.*?)</\uff5cDSML\uff5cinvoke>', re.DOTALL),
    re.compile(
        re.escape(_DSML) + r'parameter name="([^"]+)"(?:\s+string="(true|false)")?>(.*?)</\uff5cDSML\uff5cparameter>',
        re.DOTALL,
    ),
    _dsml_value,
)


def _read_dsml(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """DeepSeek V3.2 (`function_calls`) and V4 (`tool_calls`): `invoke` elements with `parameter`s."""
    return _block(f"</\uff5cDSML\uff5c{match.group(1)}>", _DSML_PARSE)(text, match, final, functions)


_DSML_CALLS = _Markup(
    re.compile(re.escape(_DSML) + r"(function_calls|tool_calls)>"),
    re.compile(_prefixes(_DSML + "function_calls>").pattern + "|" + _prefixes(_DSML + "tool_calls>").pattern),
    _read_dsml,
)
_MINIMAX_CALLS = _literal_markup(
    ("<minimax:tool_call>",),
    _block(
        "</minimax:tool_call>",
        _invokes(
            re.compile(r'<invoke name="?([^">\s]+)"?\s*>(.*?)</invoke>', re.DOTALL),
            re.compile(r'<parameter name="?([^">\s]+)"?\s*>(.*?)</parameter>', re.DOTALL),
            _schema_typed,
        ),
    ),
)
_MINICPM_PARAMETER = re.compile(r'\s*<param name="([^"]+)">')
_MINICPM_CLOSE = re.compile(r"\s*</function>")
_MINICPM_UNFINISHED = re.compile(
    _prefixes('<param name="', r'[^"]*"?').pattern + "|" + _prefixes("</function>").pattern
)


def _read_minicpm(text: str, match: re.Match[str], final: bool, functions: Mapping[str, Any]) -> _Region | None:
    """MiniCPM5: `<function name="n"><param name="k">value</param>…</function>`, a value holding markup in
    CDATA (which may itself hold `</param>`), read parameter by parameter."""
    name, position = match.group(1), match.end()
    arguments: dict[str, Any] = {}
    while True:
        closing = _MINICPM_CLOSE.match(text, position)
        if closing is not None:
            return _Region(closing.end(), [ParsedCall(name, json.dumps(arguments, ensure_ascii=False))])
        parameter = _MINICPM_PARAMETER.match(text, position)
        if parameter is None:
            rest = text[position:].lstrip()
            if not final and (not rest or _MINICPM_UNFINISHED.fullmatch(rest)):
                return None
            return _Region(position, None)
        start = parameter.end()
        if text.startswith("<![CDATA[", start):
            cdata_end = text.find("]]>", start)
            end = text.find("</param>", cdata_end) if cdata_end >= 0 else -1
        else:
            end = text.find("</param>", start)
        if end < 0:
            return None if not final else _Region(len(text), None)
        arguments[parameter.group(1)] = _cdata_value(text[start:end], name, parameter.group(1), functions)
        position = end + len("</param>")


_MINICPM_CALL = _Markup(
    re.compile(r'<function name="([^"]+)">'), _prefixes('<function name="', r'[^"]*"?'), _read_minicpm
)


_GLM_MARKERS = ("<tool_call>", "</tool_call>", "<arg_key>", "</arg_key>", "<arg_value>", "</arg_value>")


def _format(name: str, *markups: _Markup, markers: tuple[str, ...] = (), short_ids: bool = False) -> ToolFormat:
    return ToolFormat(name, (*markups, *(m for m in _COMMON if m not in markups)), markers, short_ids)


FORMATS: dict[str, ToolFormat] = {
    format.name: format
    for format in (
        _format("json"),
        _format("hermes", _HERMES, _FUNCTION_TAG, markers=("<tool_call>", "</tool_call>")),
        _format(
            "llama3",
            _Markup(re.compile(re.escape("<|python_tag|>")), _prefixes("<|python_tag|>"), _read_python_tag),
            markers=("<|python_tag|>",),
        ),
        _format(
            "mistral",
            _Markup(re.compile(re.escape("[TOOL_CALLS]")), _prefixes("[TOOL_CALLS]"), _read_mistral),
            markers=("[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"),
            short_ids=True,
        ),
        _format("granite", _tagged("<|tool_call|>", None), markers=("<|tool_call|>",)),
        _format(
            "deepseek",
            _Markup(re.compile(re.escape(DEEPSEEK_CALLS_BEGIN)), _prefixes(DEEPSEEK_CALLS_BEGIN), _read_deepseek),
            markers=(
                DEEPSEEK_CALLS_BEGIN,
                DEEPSEEK_CALLS_END,
                DEEPSEEK_CALL_BEGIN,
                DEEPSEEK_CALL_END,
                DEEPSEEK_TOOL_SEP,
            ),
        ),
        _format(
            "command_r",
            _tagged("<|START_ACTION|>", "<|END_ACTION|>"),
            # Cohere's answer wrappers (Command R7B's response, Command A MoE's text): not content
            _literal_markup(
                ("<|START_RESPONSE|>", "<|END_RESPONSE|>", "<|START_TEXT|>", "<|END_TEXT|>"),
                _dropped,
                wraps_answer=True,
            ),
            markers=(
                "<|START_ACTION|>",
                "<|END_ACTION|>",
                "<|START_RESPONSE|>",
                "<|END_RESPONSE|>",
                "<|START_TEXT|>",
                "<|END_TEXT|>",
            ),
        ),
        _format("functionary", _FUNCTION_TAG),
        # gpt-oss: read by services/chat/harmony.py, whose channels carry thinking, answer and calls alike
        ToolFormat("harmony", (), ("<|start|>", "<|channel|>", "<|message|>", "<|constrain|>", "<|end|>", "<|call|>")),
        # Muse Glimmer: read by services/chat/muse.py, messages to `self`, `user` or a tool
        ToolFormat("muse_glimmer", (), ("<|start|>", "<|message|>", "<|eom|>", "<|eot|>")),
        _format("glm", markers=_GLM_MARKERS),
        _format(
            "seed_oss",
            _tagged("<seed:tool_call>", "</seed:tool_call>"),
            markers=("<seed:tool_call>", "</seed:tool_call>"),
        ),
        _format("nemotron", _tagged("<TOOLCALL>", "</TOOLCALL>"), markers=("<TOOLCALL>", "</TOOLCALL>")),
        _format("tool_calls_tags", _tagged("<tool_calls>", "</tool_calls>"), markers=("<tool_calls>", "</tool_calls>")),
        _format("firefunction", _Markup(re.compile(r"functools(?=\[)"), _prefixes("functools["), _until(None))),
        _format(
            "kimi_k2",
            _Markup(
                re.compile(re.escape("<|tool_calls_section_begin|>")),
                _prefixes("<|tool_calls_section_begin|>"),
                _read_kimi,
            ),
            _literal_markup(("<|tool_call_begin|>",), _read_kimi_call),
            markers=(
                "<|tool_calls_section_begin|>",
                "<|tool_calls_section_end|>",
                "<|tool_call_begin|>",
                "<|tool_call_argument_begin|>",
                "<|tool_call_end|>",
            ),
        ),
        _format(
            "gemma4",
            _literal_markup((GEMMA_CALL_OPENING,), _read_gemma),
            # a thinking block after the answer began (an empty one closes some replies): not content
            _literal_markup(("<|channel>thought",), _read_late_thought, wraps_answer=True),
            markers=(GEMMA_CALL_OPENING, GEMMA_CALL_END, GEMMA_QUOTE),
        ),
        _format(
            "dsml",
            _DSML_CALLS,
            markers=("\uff5cDSML\uff5c",),
        ),
        _format("minimax_m2", _MINIMAX_CALLS, markers=("<minimax:tool_call>", "</minimax:tool_call>")),
        _format(
            "minimax_m3",
            _literal_markup((_M3 + "<tool_call>",), _block(_M3 + "</tool_call>", _calls_m3)),
            # a turn without reasoning starts with the thinking's closing tag alone
            _literal_markup(("</mm:think>",), _dropped, wraps_answer=True),
            markers=(_M3,),
        ),
        _format("minicpm5", _MINICPM_CALL),
        _format(
            "apertus",
            _literal_markup(("<|tools_prefix|>",), _block("<|tools_suffix|>", _calls_keyed_by_name)),
            markers=("<|tools_prefix|>", "<|tools_suffix|>"),
        ),
        _format(
            "kimi_k3",
            _literal_markup(
                (
                    "<|open|>tools<|sep|>",
                    "<|open|>response<|sep|>",
                    "<|close|>response<|sep|>",
                    "<|close|>message<|sep|>",
                    "<|end_of_msg|>",
                ),
                _read_kimi_k3,
                wraps_answer=True,
            ),
            markers=("<|open|>", "<|close|>", "<|sep|>", "<|end_of_msg|>"),
        ),
        _format(
            "command_r_plus",
            _Markup(
                re.compile(r"Action:\s*```(?:json)?[ \t]*\n"),
                re.compile(r"A(?:c(?:t(?:i(?:o(?:n(?::\s*(?:`{1,3}(?:j(?:s(?:o(?:n[ \t]*)?)?)?)?)?)?)?)?)?)?)?"),
                _until("```"),
            ),
        ),
        _format("ling3", markers=_GLM_MARKERS),
        _format(
            "gigachat",
            # GigaChat 3: a message of the role "function call"; 3.1: a marker token; then the call as JSON
            _Markup(
                re.compile(r"<\|message_sep\|>\s*function call<\|role_sep\|>\s*"),
                re.compile(_prefixes("<|message_sep|>").pattern + r"|<\|message_sep\|>[\s\w<|]*"),
                _read_json_after,
            ),
            _literal_markup(("<|function_call|>",), _read_json_after),
            markers=("<|message_sep|>", "<|role_sep|>", "<|function_call|>"),
        ),
        _format(
            "functionary_v3_2",
            _Markup(
                re.compile(r"(?:\A|>>>)(all|[A-Za-z_][\w.-]*)\n"),
                re.compile(r"\A[A-Za-z_][\w.-]*|>{1,3}(?:[A-Za-z_][\w.-]*)?"),
                _read_recipient,
                wraps_answer=True,
            ),
        ),
        _format(
            "pythonic",
            _tagged("<|tool_call_start|>", "<|tool_call_end|>"),
            _tagged("<|python_start|>", "<|python_end|>"),
            _PYTHON_LIST,
            markers=("<|tool_call_start|>", "<|tool_call_end|>", "<|python_start|>", "<|python_end|>"),
        ),
    )
}


def template_variables(tool_format: ToolFormat, tools: list[Any] | None) -> dict[str, Any]:
    """Names a family's template reads besides `messages` and `tools` (FireFunction's `functions` and
    `datetime`, as llama.cpp passed them)."""
    if tool_format.name != "firefunction":
        return {}
    functions = [tool["function"] for tool in tools or []]
    return {"functions": json.dumps(functions, indent=2), "datetime": time.strftime("%b %d %Y %H:%M:%S GMT")}


def _has(*markers: str) -> Callable[[str], bool]:
    return lambda template: all(marker in template for marker in markers)


def _has_any(*markers: str) -> Callable[[str], bool]:
    return lambda template: any(marker in template for marker in markers)


# First match wins: templates that mention several markers are ordered as llama.cpp's common/chat orders them.
_DETECTION: list[tuple[str, Callable[[str], bool]]] = [
    ("mistral", _has("[TOOL_CALLS]")),
    ("harmony", _has("<|channel|>")),
    ("muse_glimmer", _has("<atem:function_calls>", "<|eom|>")),
    ("kimi_k2", _has("<|tool_calls_section_begin|>")),
    ("functionary_v3_2", _has(">>>all")),
    ("kimi_k3", _has("<|open|>", "<|close|>", "<|end_of_msg|>")),
    ("ling3", _has("<role>ASSISTANT</role>", "<arg_key>")),
    ("dsml", _has("\uff5cDSML\uff5c")),
    ("gemma4", _has("<|tool_call>call:")),
    ("minimax_m2", _has("<minimax:tool_call>")),
    ("minimax_m3", _has("]<]minimax[>[")),
    ("minicpm5", _has("Tool usage guidelines:", '<function name="', '<param name="')),
    ("apertus", _has("<|tools_prefix|>")),
    ("command_r_plus", _has("directly-answer")),
    ("glm", _has("<arg_key>")),
    ("seed_oss", _has("<seed:tool_call>")),
    ("nemotron", _has("<TOOLCALL>")),
    ("tool_calls_tags", _has("<tool_calls>")),
    ("firefunction", _has(" functools[")),
    ("deepseek", _has(DEEPSEEK_CALLS_BEGIN)),
    ("command_r", _has("<|START_ACTION|>")),
    ("pythonic", _has_any("<|tool_call_start|>", "<|tool_list_start|>", "<|python_start|>", "List of tools: [")),
    ("gigachat", _has("<|role_sep|>", "<|message_sep|>")),
    ("granite", _has("<|tool_call|>")),
    ("hermes", _has("<tool_call>")),
    ("functionary", _has("<|start_header_id|>", "<function=")),
    ("llama3", lambda template: "<|start_header_id|>" in template and _has_any("ipython", "<|python_tag|>")(template)),
]


def detect_format(template: str) -> ToolFormat:
    """The family a chat template belongs to, by the markers it writes."""
    return next((FORMATS[name] for name, matches in _DETECTION if matches(template)), FORMATS["json"])


# --- reading a reply ------------------------------------------------------------------------------------------


def read_calls(
    text: str, tool_format: ToolFormat, functions: Mapping[str, Any], *, final: bool, reading: Reading | None = None
) -> Reading:
    """Reads `text` into content and calls to `functions` (name -> function). Given the `reading` of a text
    that this one extends (a stream), goes on from where that one's decided part ends."""
    reading = reading or Reading()
    position = reading.decided
    content, calls, spans = [reading.content], list(reading.calls), list(reading.spans)

    def keep(start: int, end: int) -> None:
        if end > start:
            content.append(text[start:end])
            spans.append((start, end))

    pending = reading.pending
    while True:
        found: tuple[re.Match[str], _Markup] | None = None
        resumed = pending.start.match(text, position) if pending is not None else None
        if resumed is not None and pending is not None:
            found = (resumed, pending)  # no need to search the whole region again for every new token
        else:
            for markup in tool_format.markups:
                match = markup.find(text, position)
                if match is not None and (found is None or match.start() < found[0].start()):
                    found = (match, markup)
        pending = None
        if found is None:
            hold = len(text) if final else _tail_hold(text, position, tool_format)
            keep(position, hold)
            return Reading("".join(content), calls, hold, spans=spans)
        match, markup = found
        keep(position, match.start())
        try:
            region = markup.read(text, match, final, functions)
        except RecursionError:  # JSON nested thousands deep: not a call, and no reason for a 500
            region = _Region(match.end(), None)
        if region is None:
            return Reading("".join(content), calls, match.start(), markup, spans)
        if region.calls is not None and all(call.name in functions for call in region.calls):
            calls.extend(region.calls)
        else:
            keep(match.start(), region.end)
        position = region.end


# characters, not counting blank space (openings allow any amount of it): the longest opening with a function's
# name in it (`<function name="` and a 64-character name) still holds back whole
_LONGEST_OPENING = 96


def _tail_hold(text: str, position: int, tool_format: ToolFormat) -> int:
    """The earliest place from which the end of `text` may still grow into the start of a call."""
    candidates: list[int] = []
    index = len(text) - 1
    while index >= position and len(candidates) < _LONGEST_OPENING:
        if not text[index].isspace():
            candidates.append(index)
        index -= 1
    for begin in reversed(candidates):
        # matched in place, so that a markup anchored at the reply's start (\A) holds only there
        if any(markup.could_start.fullmatch(text, begin) for markup in tool_format.markups):
            return begin
    return len(text)
