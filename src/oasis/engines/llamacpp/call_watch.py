"""Where a reply opens a tool call, and the grammar that holds the call from there (`SamplingParams.call_grammar`).

llama.cpp's lazy grammar waits for a trigger pattern and then replays the text from the pattern's first group into
the grammar. Two things make its own trigger unsafe to rely on here: a pattern is searched again over the whole
reply at every token (libstdc++'s regex recurses per character: a long reply can overflow the thread's stack), and
the replayed text runs to the end of the token that completed the match, so a token carrying more than the grammar
allows (`<tool_call>Hello`) would throw out of the sampler, through ctypes, and end the process. So the watch is
kept here: it decides, at a token boundary, that a call opened with nothing after the opening that the grammar
refuses, and only then is a lazy grammar made and fed the few tokens that hold the opening (llama.cpp replays them
from the opening's first character, which may lie inside a token). Besides the family's own calls, a call in a
Markdown fence, and a bare one that opens the answer, open only once they name an offered function whole: other
JSON stays text.
"""

from __future__ import annotations

import bisect
import codecs
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from oasis.engines.llamacpp.gbnf import literal, text_without
from oasis.engines.llamacpp.gemma_grammar import gemma_rules
from oasis.engines.llamacpp.pythonic_grammar import CALLS as PYTHON_CALLS
from oasis.engines.llamacpp.pythonic_grammar import python_literals, python_parts, python_rules
from oasis.engines.text import (
    BARE_CALL_OPENING,
    FENCE_CLOSE,
    FENCED_CALL_OPENING,
    GEMMA_CALL_HEAD,
    HARMONY_CHANNELS,
    JSON_SPACE,
    CallGrammar,
    NamedCalls,
    UnusableSchema,
    XmlCalls,
    closes_a_fence,
    prefix_pattern,
)

# What may follow an opening within its last token and still be a beginning the grammar accepts: after a tag, the
# wrapping's blank space and the call object's first characters; after a bare call's `"name":`, the name (so far: a
# function's name, or the beginning of one) and what follows it up to `"arguments"`'s quote. Tokens that carry more
# never open a call: the reply goes on unconstrained, as without a grammar.
_TAIL_AFTER_TAG = rf'[ \n]{{0,2}}(?:\[{JSON_SPACE})?(?:\{{{JSON_SPACE}"?)?'
_TAIL_AFTER_KEY = rf'{JSON_SPACE}(?:"[A-Za-z0-9_-]*(?:"(?:,{JSON_SPACE}"?)?)?)?'
_NAME_IN_TAIL = re.compile(rf'{JSON_SPACE}(?:"(?P<name>[A-Za-z0-9_-]*)(?P<closed>")?)?')
# JSON_SPACE as GBNF, in place of the schema converter's `space` (one space at most)
_SPACE_RULE = 'space ::= ( " " | "\\n"{1,2} [ \\t]{0,20} )?'
# FENCE_OPEN as GBNF
_FENCE_OPEN_RULE = '"```" ("json" | "tool_call" | "tool_code")? [ \\t]{0,2} "\\n"'
# An opening is looked for this far back from the reply's end: the longest (a bare call's name, 64 characters, and
# its JSON around it) is well within it.
_WINDOW = 256
# Rule names of their own beside the schema's (which are named after its properties and definitions)
ROOT = "oasis-call-root"
_CALLS = "oasis-calls"
_VALUE = "oasis-call-value"
_SEPARATOR = "oasis-call-separator"
_SPACE = "oasis-call-space"
_NAMED = "oasis-named-call"
_HARMONY = "oasis-harmony-call"
_HARMONY_TYPE = "oasis-harmony-type"
_GEMMA_CALL = "oasis-gemma-call"
_CALL_ID = "oasis-call-id"
# The rule the schema converter writes for the i-th function's arguments in `call_schema`'s alternatives
_ARGUMENTS_RULE = "alternative-{}-arguments"
# After a named call's opening: the name (so far)
_TAIL_NAME = r"[A-Za-z0-9_-]*"
# After a pythonic list's tag: blank space, the list's opening and a name so far
_TAIL_PYTHON = rf"[ \n]{{0,2}}(?:\[{_TAIL_NAME})?"
_PYTHON_BEGUN = re.compile(r"[ \n]{0,2}\[?")
# After an XML call's tag: the function's opening (so far), which the watch reads exactly (`_tail_fits`)
_TAIL_XML = r"[ \n]{0,2}[^\n]*[ \n]{0,2}"
_XML_BLANK = re.compile(r"[ \n]{0,2}")
OpeningKind = Literal["own", "fenced", "bare"]  # the family's own opening, a fence's, a bare call's
# XML calls: each function's call, a parameter's value written as text, and the rule of the j-th parameter of the
# i-th function written as JSON (a rule of the schema's converter: `parameter_parts`)
_XML_CALL = "oasis-xml-call"
_XML_FUNCTION_RULE = "oasis-xml-function-{}"
_XML_TEXT = "oasis-xml-text"
_XML_JSON = "oasis-xml-json-{}-{}"
# A parameter's name as every family's reader reads it; a function's as GLM's does (the others' read any plain one)
_XML_KEY = re.compile(r'[^\s<>"]+')
_GLM_NAME = re.compile(r"[A-Za-z_][\w.-]*")


def call_rules(grammar: CallGrammar, schema_rules: str) -> str:
    """The GBNF of the call (from `schema_rules`, whose root is the call object, with the rules `parameter_parts`
    names where the calls are XML or pythonic) with its wrapping, rooted at ROOT."""
    listed = 'root ("," space root)*' if grammar.repeats else "root"
    schema_rules = re.sub(r"^space ::= .*$", lambda _: _SPACE_RULE, schema_rules, flags=re.MULTILINE)
    if grammar.pythonic:  # (its calls are the grammar's only: no JSON call reads these literals)
        schema_rules = python_literals(schema_rules)
    if _SPACE_RULE not in schema_rules:
        schema_rules += "\n" + _SPACE_RULE
    # a call, or a list of them (with parallel calls, further ones after blank space, a comma or a semicolon, as
    # the reader reads them); blank space may end the reply after them
    rules = [
        schema_rules,
        f'{_VALUE} ::= root | "[" space {listed} "]" space',
        f"{_CALLS} ::= {_VALUE} ({_SEPARATOR} {_VALUE})*" if grammar.repeats else f"{_CALLS} ::= {_VALUE}",
        f"{_SEPARATOR} ::= [ \\n]{{0,2}} ([,;] [ \\n]{{0,2}})?",
        f"{_SPACE} ::= [ \\n]{{0,2}}",
    ]
    forms = []  # where the reply may go from the opening on: the family's calls, calls in a fence, bare calls
    if grammar.opening is not None:
        if grammar.harmony:
            rules += _harmony_rules(grammar, schema_rules)
            forms.append(f"{_HARMONY} {_SPACE}")
        elif grammar.pythonic:
            assert grammar.tags is not None and grammar.tags[1] is not None
            rules += python_rules(grammar.names, _parameters(grammar), grammar.repeats)
            forms.append(_wrapped(grammar, literal(grammar.tags[0]), grammar.tags[1], PYTHON_CALLS))
        elif grammar.gemma4:
            rules += _gemma_call_rules(grammar)
            more = f" ({_SPACE} {_GEMMA_CALL})*" if grammar.repeats else ""
            forms.append(f"{_GEMMA_CALL}{more} {_SPACE}")
        elif grammar.tags is None:
            forms.append(f"{_CALLS} {_SPACE}")
        elif grammar.xml is not None:
            rules += _xml_rules(grammar)
            forms.append(_wrapped(grammar, literal(grammar.tags[0]), grammar.tags[1], _XML_CALL))
        elif grammar.named is not None:
            rules += _named_rules(grammar, schema_rules)
            forms.append(_named_calls(grammar))
        else:  # (a body the reader reads as one JSON value, where it does so)
            calls = _VALUE if grammar.keyed_by_name else _CALLS
            forms.append(_wrapped(grammar, literal(grammar.tags[0]), grammar.tags[1], calls))
    if grammar.fenced:
        forms.append(_wrapped(grammar, _FENCE_OPEN_RULE, FENCE_CLOSE))
    if grammar.bare:
        forms.append(f"{_CALLS} {_SPACE}")
    assert forms, "a call grammar has an opening"
    alternatives = " | ".join(f"( {form} )" for form in dict.fromkeys(forms))
    return "\n".join([*rules, f"{ROOT} ::= {alternatives}\n"])


def _named_rules(grammar: CallGrammar, schema_rules: str) -> list[str]:
    """A named call as its family writes it: its own opening (`each`) where it has one, one of the functions'
    names, an id perhaps, the arguments' marker, then its arguments (the rules the schema converter wrote for them:
    a converter that names them otherwise leaves no grammar), and its closing."""
    form = grammar.named
    assert form is not None
    calls = []
    for index, name in enumerate(grammar.names):
        arguments = _arguments_rule(index, schema_rules)
        call_id = f" {_CALL_ID}" if form.call_id is not None else ""
        calls.append(f"{literal(form.head(name))}{call_id} {literal(form.arguments)} {arguments}")
    ending = "".join(f" {literal(part)}" for part in (form.arguments_end, form.closing) if part)
    rules = [f"{_NAMED} ::= ( " + " | ".join(calls) + f" ){ending}"]
    if form.call_id is not None:
        rules.append(f"{_CALL_ID} ::= ( {literal(form.call_id)} [{form.id_characters}]{{1,32}} )?")
    return rules


def _arguments_rule(index: int, schema_rules: str) -> str:
    """The rule the schema converter wrote for the `index`-th function's arguments (a converter that names them
    otherwise leaves no grammar)."""
    arguments = _ARGUMENTS_RULE.format(index)
    if f"\n{arguments} ::= " not in f"\n{schema_rules}":
        raise UnusableSchema(f"no rule {arguments} in the call's grammar")
    return arguments


def _harmony_rules(grammar: CallGrammar, schema_rules: str) -> list[str]:
    """A harmony call (gpt-oss) as its readers read one: addressed in the channel's header or in the role's (where
    the role's `<|start|>assistant` is written, or was the prompt's), one of the functions' names, perhaps the body's
    type (`json`, `<|constrain|>json`), then the arguments as the body. The call is the reply's last: `<|call|>`, an
    end-of-generation token, ends it once the arguments are whole (as llama-server's grammar for gpt-oss ends it)."""
    channel = "( " + " | ".join(literal(f"<|channel|>{name}") for name in HARMONY_CHANNELS) + " )"
    in_channel, in_role = [], []
    for index, name in enumerate(grammar.names):
        arguments = _arguments_rule(index, schema_rules)
        in_channel.append(f"{literal(name)} {_HARMONY_TYPE} {arguments}")
        in_role.append(f"{literal(name)} {channel} {_HARMONY_TYPE} {arguments}")
    addressed = literal("to=functions.")
    return [
        f'{_HARMONY} ::= "<|start|>assistant"? ( {channel} " " {addressed} ( {" | ".join(in_channel)} )'
        f' | " "? {addressed} ( {" | ".join(in_role)} ) )',
        # (a type right after a name or a channel would be read as part of it)
        f'{_HARMONY_TYPE} ::= ( " " "<|constrain|>"? "json" | "<|constrain|>json" )? "<|message|>"',
    ]


def _gemma_call_rules(grammar: CallGrammar) -> list[str]:
    """A Gemma 4 call in its tags: `call:`, one of the functions' names, and its arguments in Gemma's syntax."""
    assert grammar.tags is not None and grammar.tags[1] is not None
    rules, arguments = gemma_rules(_parameters(grammar))
    calls = " | ".join(f"{literal(name)} {rule}" for name, rule in zip(grammar.names, arguments, strict=True))
    opened = f"{literal(grammar.tags[0])} {literal(GEMMA_CALL_HEAD)}"
    return [*rules, f"{_GEMMA_CALL} ::= {opened} ( {calls} ) {literal(grammar.tags[1])}"]


def _parameters(grammar: CallGrammar) -> list[Any]:
    """Each function's parameters, as the call's schema holds them."""
    return [alternative.get("properties", {}).get("arguments") for alternative in _alternatives(grammar.schema)]


def _named_calls(grammar: CallGrammar) -> str:
    """Named calls in their wrapping: each after the wrapping's opening (Mistral's), or each after its own opening
    inside one wrapping, closed where the wrapping has a closing."""
    assert grammar.named is not None and grammar.tags is not None
    opening, closing = grammar.tags
    if grammar.named.each is None:
        one = f"{literal(opening)} {_NAMED}"
        return f"{one} ({_SPACE} {one})* {_SPACE}" if grammar.repeats else f"{one} {_SPACE}"
    more = f" ({_SPACE} {_NAMED})*" if grammar.repeats else ""
    closed = f" {_SPACE} {literal(closing)}" if closing is not None else ""
    return f"{literal(opening)} {_SPACE} {_NAMED}{more}{closed} {_SPACE}"


def _wrapped(grammar: CallGrammar, opened: str, closed: str | None, calls: str = _CALLS) -> str:
    """Calls in a wrapping whose opening is the rule `opened`; further wrapped calls may follow (parallel calls)."""
    if closed is None:  # the wrapping's opening alone: the calls end the reply
        return f"{opened} {_SPACE} {calls} {_SPACE}"
    one = f"{opened} {_SPACE} {calls} {_SPACE} {literal(closed)}"
    more = f" ({_SPACE} {one})*" if grammar.repeats else ""
    return f"{one}{more} {_SPACE}"


@dataclass(frozen=True)
class XmlParameter:
    key: str
    required: bool
    # How its value is written: None as text (a string parameter), else as JSON, held by the rule of this name
    json_rule: str | None
    choices: tuple[str, ...] = ()  # a string parameter's only values (`enum`, `const`), if it has such
    # Written as JSON, or as text where its schema allows a string (`Optional[str]`), as the reader reads either
    or_text: bool = False


def xml_parameters(grammar: CallGrammar) -> list[list[XmlParameter] | None]:
    """Each function's parameters as its XML call writes them, in the order they are declared (None: parameters of
    any name, as text). Raises UnusableSchema where a function's arguments are not an object of named properties,
    or a name is one the reader would not read."""
    unmarked = grammar.xml is not None and not grammar.xml.function[1]  # a name that ends where its characters do
    if unmarked and not all(_GLM_NAME.fullmatch(name) for name in grammar.names):
        raise UnusableSchema("a function's name that GLM's calls cannot hold")
    functions: list[list[XmlParameter] | None] = []
    for index, alternative in enumerate(_alternatives(grammar.schema)):
        arguments = alternative.get("properties", {}).get("arguments")
        if not isinstance(arguments, Mapping):
            raise UnusableSchema("a function's arguments are not a schema")
        properties = arguments.get("properties")
        if properties is None:
            if any(key in arguments for key in ("$ref", "anyOf", "oneOf", "allOf")):
                raise UnusableSchema("a function's parameters are not an object's properties")
            functions.append([] if arguments.get("additionalProperties") is False else None)
            continue
        if not isinstance(properties, Mapping):
            raise UnusableSchema("a function's properties are not a map")
        required = arguments.get("required") or ()
        parameters = []
        for number, (key, schema) in enumerate(properties.items()):
            if not _XML_KEY.fullmatch(key):
                raise UnusableSchema(f"a parameter's name that XML calls cannot hold: {key!r}")
            as_text = isinstance(schema, Mapping) and schema.get("type") == "string"  # as the reader reads a value
            parameters.append(
                XmlParameter(
                    key,
                    key in required,
                    None if as_text else _XML_JSON.format(index, number),
                    _string_choices(schema) if as_text else (),
                    or_text=not as_text and _allows_a_string(schema),
                )
            )
        functions.append(parameters)
    return functions


def parameter_parts(grammar: CallGrammar) -> dict[str, str]:
    """For XML calls: the rule of each parameter written as JSON, and the JSON Pointer of its schema in the call's
    schema (the schema's converter writes the rules); for pythonic calls, of each parameter."""
    if grammar.pythonic:
        return python_parts(_parameters(grammar))
    if grammar.xml is None:
        return {}
    parts = {}
    for index, parameters in enumerate(xml_parameters(grammar)):
        for parameter in parameters or ():
            if parameter.json_rule is not None:
                key = parameter.key.replace("~", "~0").replace("/", "~1")
                parts[parameter.json_rule] = f"/anyOf/{index}/properties/arguments/properties/{key}"
    return parts


def _alternatives(schema: Mapping[str, object]) -> Sequence[Mapping[str, Any]]:
    alternatives = schema.get("anyOf")
    if not isinstance(alternatives, list):
        raise UnusableSchema("the call's schema is not one alternative per function")
    return alternatives


def _allows_a_string(schema: Any) -> bool:
    """Whether a schema may allow a string (where a reference leads is not followed: it may not)."""
    if not isinstance(schema, Mapping):
        return schema is not False
    kind = schema.get("type")
    if isinstance(kind, str):
        return kind == "string"
    if isinstance(kind, list):
        return "string" in kind
    alternatives = schema.get("anyOf", schema.get("oneOf"))
    if isinstance(alternatives, list):
        return any(_allows_a_string(alternative) for alternative in alternatives)
    if "const" in schema or "enum" in schema:
        values = [schema.get("const")] if "const" in schema else schema.get("enum")
        return isinstance(values, list) and any(isinstance(value, str) for value in values)
    return "$ref" not in schema and "allOf" not in schema


def _string_choices(schema: Mapping[str, Any]) -> tuple[str, ...]:
    values = [schema["const"]] if "const" in schema else schema.get("enum")
    if not isinstance(values, list) or not values or not all(isinstance(value, str) for value in values):
        return ()
    return tuple(values)


def _xml_rules(grammar: CallGrammar) -> list[str]:
    """Each function's call in the family's markup (`XmlCalls`): its opening, each parameter's (a required one once,
    another at most once), in the order they are declared, with its value, and the call's closing (several in a
    wrapping, where the family writes them so)."""
    form = grammar.xml
    assert form is not None
    tags = _xml_tags(grammar)
    rules = [f"{_XML_TEXT} ::= {text_without(tags)}"]
    calls = []
    for index, (name, parameters) in enumerate(zip(grammar.names, xml_parameters(grammar), strict=True)):
        if parameters is None:  # (a name as models write them, which the readers read alike)
            one = _xml_parameter(form, "[A-Za-z0-9_.-]+", _XML_TEXT)
            if form.json_opening_end is not None:  # marked text, or JSON (which both readers read loosely alike)
                one += f" | {_xml_parameter(form, '[A-Za-z0-9_.-]+', _XML_TEXT, as_json=True)}"
            body = f"( {one} )*"
        else:
            written = []
            for parameter in parameters:
                key = literal(parameter.key)
                if parameter.json_rule is None:
                    one = _xml_parameter(form, key, _text_value(parameter.choices, tags))
                elif not parameter.or_text:
                    one = _xml_parameter(form, key, parameter.json_rule, as_json=True)
                elif form.json_opening_end is None:  # text or JSON, after the same opening
                    one = _xml_parameter(form, key, f"( {_XML_TEXT} | {parameter.json_rule} )")
                else:  # text or JSON, each after the opening that marks it
                    as_text = _xml_parameter(form, key, _XML_TEXT)
                    one = f"{as_text} | {_xml_parameter(form, key, parameter.json_rule, as_json=True)}"
                written.append(f"( {one} )" if parameter.required else f"( {one} )?")
            body = " ".join(written)
        rule = _XML_FUNCTION_RULE.format(index)
        opening = literal(form.function[0] + name + form.function[1])
        rules.append(f"{rule} ::= {opening} {_SPACE} {body}" + (f" {literal(form.end)}" if form.end else ""))
        calls.append(rule)
    rules.append(f"{_XML_CALL} ::= " + " | ".join(calls))
    if form.several and grammar.repeats:  # further calls in the same wrapping
        rules[-1] = f"{_XML_CALL} ::= ( {' | '.join(calls)} ) ( {_SPACE} ( {' | '.join(calls)} ) )*"
    return rules


def _xml_parameter(form: XmlCalls, key: str, value: str, as_json: bool = False) -> str:
    """A parameter (its name, the rule `key`) and its value (the rule `value`; `as_json`: a JSON value, where the
    family's opening marks it), with the blank space the family's readers leave out around the value."""
    ended = form.json_opening_end if as_json and form.json_opening_end is not None else form.parameter[1]
    opened = f"{literal(form.parameter[0])} {key} {literal(ended)}"
    if form.value[0]:
        opened += f" {_SPACE} {literal(form.value[0])}"
    if form.trim == "line":
        value = f'"\n"? {value} "\n"?'
    elif form.trim == "strip":
        value = f"{_SPACE} {value} {_SPACE}"
    return f"{opened} {value} {literal(form.value[1])} {_SPACE}"


def _text_value(choices: tuple[str, ...], tags: tuple[str, ...]) -> str:
    """A string parameter's value: one of its choices, else any text (also where a choice holds a tag that would end
    the call where the reader reads it)."""
    if not choices or any(tag in choice or choice != choice.strip() for choice in choices for tag in tags):
        return _XML_TEXT  # (blank space at a choice's ends: the readers may leave it out)
    return "( " + " | ".join(map(literal, choices)) + " )"


def _xml_tags(grammar: CallGrammar) -> tuple[str, ...]:
    """What a parameter's text may not hold: the closing tags that end it and its call, where the readers would end
    them, and the wrapping's tags (the reader takes a second opening for the end of a call that was text). (A
    parameter written as JSON is held by its schema's rules alone: a string in it could still hold one, which no
    model has been seen to write.)"""
    assert grammar.xml is not None and grammar.tags is not None and grammar.tags[1] is not None
    return tuple(filter(None, (grammar.xml.value[1], grammar.xml.end, grammar.tags[0], grammar.tags[1])))


def trigger_pattern(grammar: CallGrammar, end: str = "$", *, kind: OpeningKind = "own") -> str:
    """llama.cpp's trigger (searched in the few replayed tokens): the opening (the family's, a fence's, or a bare
    call's), then a tail that reaches their end (ECMAScript's `$`; Python's `$` also matches before a last newline,
    so Python reads it with `\\Z`)."""
    if kind == "own":
        return f"({grammar.opening}){_tail(grammar)}{end}"
    return f"({FENCED_CALL_OPENING if kind == 'fenced' else BARE_CALL_OPENING}){_TAIL_AFTER_KEY}{end}"


def _tail(grammar: CallGrammar) -> str:
    if grammar.harmony:
        return _TAIL_NAME
    if grammar.gemma4:
        return _head_tail(GEMMA_CALL_HEAD)
    if grammar.pythonic:
        return _TAIL_PYTHON
    if grammar.named is not None:
        return _named_tail(grammar.named)
    if grammar.xml is not None:
        return _TAIL_XML
    return _TAIL_AFTER_TAG if grammar.tags is not None else _TAIL_AFTER_KEY


def _named_tail(form: NamedCalls) -> str:
    """After a named call's wrapping opened: blank space where each call has its own opening, then the call's head
    so far, or the whole head and a name so far."""
    return _head_tail(form.head(""), "[ \n]{0,2}" if form.each is not None else "")


def _head_tail(head: str, blank: str = "") -> str:
    """After an opening: `blank` space, then a call's `head` so far, or the whole head and a name so far."""
    return f"{blank}(?:{re.escape(head)}{_TAIL_NAME}|{prefix_pattern(head)})" if head else _TAIL_NAME


@dataclass(frozen=True)
class _Opening:
    kind: OpeningKind
    pattern: re.Pattern[str]
    tail: re.Pattern[str]
    at_start: bool  # only where the answer starts
    # What the tail must hold of the function's name: nothing (after a tag), a beginning of one (in quotes, bare
    # after a named call's opening, or in an XML call's opening), or one whole
    naming: Literal["none", "begun", "unquoted", "xml", "whole"]


def _openings(grammar: CallGrammar) -> list[_Opening]:
    openings = []
    if grammar.opening is not None:
        naming: Literal["none", "begun", "unquoted", "xml"] = (
            "unquoted"
            if grammar.named is not None or grammar.harmony or grammar.gemma4 or grammar.pythonic
            else "xml"
            if grammar.xml is not None
            else "none"
            if grammar.tags is not None
            else "begun"
        )
        openings.append(
            _Opening("own", re.compile(grammar.opening), re.compile(_tail(grammar)), grammar.at_start, naming)
        )
    after_key = re.compile(_TAIL_AFTER_KEY)
    if grammar.fenced:
        openings.append(_Opening("fenced", re.compile(FENCED_CALL_OPENING), after_key, False, "whole"))
    if grammar.bare:
        openings.append(_Opening("bare", re.compile(BARE_CALL_OPENING), after_key, True, "whole"))
    return openings


class CallWatch:
    """Reads a reply token by token and says at which token a call opened, and how (`opened`)."""

    def __init__(self, grammar: CallGrammar) -> None:
        self._grammar = grammar
        self._openings = _openings(grammar)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""
        self.tokens: list[int] = []
        self._starts: list[int] = []  # each token's first character in `text`
        self._answer_from: int | None = None if grammar.thinking is not None else 0
        self._searched = 0  # openings that start before this were looked at already
        self._thinking_searched = 0  # the thinking's closing tag does not start before this
        self._start_passed = False  # a call that did not open at the answer's start never will there
        self.closed = False  # no call will open
        self.opened: OpeningKind = "own"  # how the call that opened did

    def add(self, token: int, piece: bytes) -> int | None:
        """Takes the next token; when a call opened with it, how many of the latest tokens hold the opening (those
        the grammar is fed)."""
        self.tokens.append(token)
        self._starts.append(len(self.text))
        self.text += self._decoder.decode(piece)
        if self._answer_from is None:
            self._answer_from = self._answer_start()
            if self._answer_from is None:
                return None
        begin = max(self._searched, self._answer_from)
        answer = _non_blank(self.text, self._answer_from)
        found: list[tuple[re.Match[str], _Opening]] = []
        for opening in self._openings:
            # (fences are counted in the answer: with the thinking inline the reader also counts those in the
            # thinking; a call the watch does not open is read whole at the end, one it opens as it is written)
            if not opening.at_start:
                found += [
                    (match, opening)
                    for match in opening.pattern.finditer(self.text, begin)
                    if opening.kind != "fenced" or not closes_a_fence(self.text, match.start(), self._answer_from)
                ]
            elif not self._start_passed and (match := opening.pattern.match(self.text, answer)) is not None:
                found.append((match, opening))
        for match, opening in found:
            if self._tail_fits(match.end(), opening):
                first = bisect.bisect_right(self._starts, match.start()) - 1
                self.opened = opening.kind
                return len(self.tokens) - first
        self._start_passed = len(self.text) - answer > _WINDOW
        self.closed = self._start_passed and all(opening.at_start for opening in self._openings)
        self._searched = max(begin, len(self.text) - _WINDOW)
        return None

    def _tail_fits(self, start: int, opening: _Opening) -> bool:
        """Whether the text after an opening is a beginning the call's grammar accepts (and whole: bytes of a
        character still to come would follow it in llama.cpp's text)."""
        if self._decoder.getstate()[0] or not opening.tail.fullmatch(self.text, start):
            return False
        if opening.naming == "none":
            return True
        if opening.naming == "unquoted":  # a call's head so far (after blank space, where each call opens itself)
            named_form = self._grammar.named
            if named_form is None:  # harmony's recipient, Gemma 4's `call:name`, a pythonic list's: the head so far
                head = GEMMA_CALL_HEAD if self._grammar.gemma4 else ""
                if self._grammar.pythonic:
                    list_opening = _PYTHON_BEGUN.match(self.text, start)
                    assert list_opening is not None  # (each part is optional)
                    start = list_opening.end()
                return any((head + function).startswith(self.text[start:]) for function in self._grammar.names)
            blank = _XML_BLANK.match(self.text, start) if named_form.each is not None else None
            begun = self.text[blank.end() if blank is not None else start :]
            return any(named_form.head(function).startswith(begun) for function in self._grammar.names)
        if opening.naming == "xml":  # after blank space, a function's opening so far (and blank space after it)
            form = self._grammar.xml
            assert form is not None
            blank = _XML_BLANK.match(self.text, start)
            assert blank is not None  # it may be empty
            begun = self.text[blank.end() :]
            return any(
                opened.startswith(begun)
                or (begun.startswith(opened) and _XML_BLANK.fullmatch(begun, len(opened)) is not None)
                for opened in (form.function[0] + function + form.function[1] for function in self._grammar.names)
            )
        named = _NAME_IN_TAIL.match(self.text, start)
        assert named is not None  # each of its parts is optional
        name = named.group("name")
        if opening.naming == "whole" or named.group("closed"):  # a fence's or a bare call's: once named whole
            return bool(named.group("closed")) and name in self._grammar.names
        return name is None or any(function.startswith(name) for function in self._grammar.names)

    def _answer_start(self) -> int | None:
        """Where the answer begins once the thinking (if any) is over; None while it may still be thinking."""
        assert self._grammar.thinking is not None
        opened, closed = self._grammar.thinking
        text = self.text
        if not self._grammar.thinking_open:
            start = _non_blank(text, 0)
            if start == len(text) or (opened.startswith(text[start:]) and len(text) - start < len(opened)):
                return None  # nothing yet, or what may still become the thinking's opening tag
            if not text.startswith(opened, start):
                return 0
            search_from = start + len(opened)
        else:
            search_from = 0
        search_from = max(search_from, self._thinking_searched)
        # the closing tag ends it, the answer after it; or markup that also begins the answer, the answer with it
        ends = [(at + len(closed), at) for at in [text.find(closed, search_from)] if at >= 0]
        for marker in self._grammar.thinking_ended_by:
            at = text.find(marker, search_from)
            if at >= 0:
                ends.append((at, at))
        if not ends:
            longest = max(map(len, (closed, *self._grammar.thinking_ended_by)))
            self._thinking_searched = max(search_from, len(text) - longest)
            return None
        return min(ends, key=lambda end: end[1])[0]


def _non_blank(text: str, start: int) -> int:
    while start < len(text) and text[start].isspace():
        start += 1
    return start
