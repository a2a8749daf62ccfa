"""A call that opens under `tool_choice` auto is held to its functions' schemas from there (`CallGrammar`): where the
watch says a call opened, and what the engine then writes."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from oasis.engines.llamacpp.call_watch import CallWatch, trigger_pattern
from oasis.engines.text import (
    BARE_CALL_OPENING,
    DSML_CALLS,
    GLM_CALLS,
    MINIMAX_M2_CALLS,
    MISTRAL_CALLS,
    QWEN3_CODER_CALLS,
    CallGrammar,
    SamplingParams,
    UnusableSchema,
)
from oasis.services.chat.harmony import read_harmony
from oasis.services.chat.tool_formats import FORMATS, ParsedCall, read_calls
from oasis.services.chat.tools import (
    DEEPSEEK_CALLS,
    DEEPSEEK_R1_CALLS,
    KIMI_K2_CALLS,
    ToolPlan,
    call_grammar,
    fits,
)
from tests.conftest import smollm

WEATHER = {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PLAN = ToolPlan("auto", [WEATHER, {"name": "get_time", "parameters": {"type": "object"}}], True, False)


NEMO_TEMPLATE = "{{- '[TOOL_CALLS][' }}{{ calls }}"  # as Mistral Nemo's template writes earlier calls
NAMED_TEMPLATE = "{{- '[TOOL_CALLS]' + name + '[ARGS]' + arguments }}"  # as Ministral 3's does
XML_TEMPLATE = "<tool_call>\n<function={{ name }}>\n<parameter={{ key }}>"  # as Qwen3-Coder's does
R1_TEMPLATE = "{{ name + '\\n```json\\n' + arguments }}"  # as DeepSeek R1's does
DSML_V4_TEMPLATE = "{{ '<\uff5cDSML\uff5ctool_calls>' }}"  # as DeepSeek V4's does
GIGACHAT_31_TEMPLATE = 'function_call="<|function_call|>"'  # as GigaChat 3.1's does
TEMPLATES = {
    "named": NAMED_TEMPLATE,
    "xml": XML_TEMPLATE,
    "r1": R1_TEMPLATE,
    "v4": DSML_V4_TEMPLATE,
    "v3.1": GIGACHAT_31_TEMPLATE,
}


def _grammar(
    tool_format: str,
    thinking: tuple[str, str] | None = None,
    thinking_open: bool = False,
    plan: ToolPlan = PLAN,
    template: str = "",
    thinking_ended_by: tuple[str, ...] = (),
) -> CallGrammar:
    grammar = call_grammar(
        plan, tool_format, thinking, thinking_open, noted=True, template=template, thinking_ended_by=thinking_ended_by
    )
    assert grammar is not None
    return grammar


def _calls_read(family: str, text: str) -> list[ParsedCall]:
    """The calls in `text` as the family's reader reads them whole."""
    functions = {function["name"]: function for function in PLAN.functions}
    if family == "harmony":
        return read_harmony(text, functions, final=True).calls
    return read_calls(text, FORMATS[family], functions, final=True).calls


def _opened_at(grammar: CallGrammar, pieces: Sequence[str | bytes]) -> tuple[int, int] | None:
    """The piece at which the call opened, and how many pieces hold its opening (where llama.cpp's trigger for
    that opening finds it too, in their bytes as the engine looks)."""
    watch = CallWatch(grammar)
    written = [piece.encode() if isinstance(piece, str) else piece for piece in pieces]
    for index, piece in enumerate(written):
        replay = watch.add(index, piece)
        if replay is not None:
            replayed = b"".join(written[index + 1 - replay : index + 1])
            assert re.search(trigger_pattern(grammar, r"\Z", kind=watch.opened).encode(), replayed), replayed
            return index, replay
    return None


@pytest.mark.parametrize(
    ("pieces", "opened"),
    [
        (["<tool", "_call", ">", "\n", '{"', "name"], (2, 3)),  # at the tag's end: its three pieces are replayed
        (["Let me look.", " <", "tool_call", ">\n{"], (3, 3)),  # text first; a tag, newline and brace in one piece
        (["<tool_call>"], (0, 1)),  # a special token
        (["<tool_call>Hi"], None),  # a token carrying what the grammar refuses: not taken for an opening
        (["The tag <tool_call> opens a call."], None),
    ],
)
def test_a_tagged_call_opens_where_its_tag_ends_a_token(pieces: list[str], opened: tuple[int, int] | None) -> None:
    assert _opened_at(_grammar("hermes"), pieces) == opened


@pytest.mark.parametrize(
    ("pieces", "opened"),
    [
        (['{"', "name", '":'], (2, 3)),
        (["[", '{"', "name", '":', ' "', "get"], (3, 4)),  # a list of calls, as the history shows earlier ones
        (["\n", ' {"name": "get_'], (1, 1)),  # a name begun: one of the functions'
        (['{"name": "get_weather", "'], (0, 1)),
        (['{"name": "Paris"'], None),  # a name no function has, whole in the opening's token: left as written
        (["Sure: ", '{"', "name", '":'], None),  # not where the answer starts
    ],
)
def test_a_bare_call_opens_only_where_the_answer_starts(pieces: list[str], opened: tuple[int, int] | None) -> None:
    assert _opened_at(_grammar("json"), pieces) == opened


@pytest.mark.parametrize("family", ["hermes", "json", "mistral", "llama3"])
@pytest.mark.parametrize(
    ("pieces", "opened"),
    [
        (["Sure.", "\n```", "json", "\n", '{"', "name", '":', ' "', "get", "_weather", '",'], (10, 10)),
        (["```json\n", '[{"name": "get_time"', "}"], (1, 2)),  # a list of calls
        (["```\n", '{"name": "get_weather", "'], (1, 2)),  # a fence with no language
        (["```json\n", '{"name": "get_'], None),  # a name begun: not yet taken for a call
        (["```json\n", '{"name": "get_", "'], None),  # a name no function has
        (["```json\n", '{"name": "Paris", "age": 3}'], None),  # other JSON in a fence stays text
        (["```python\n", '{"name": "get_weather"'], None),  # another language's fence
        (["```json\n", '{"name": "get_weather", "arguments": {'], None),  # more than the opening in one token
        (["```", "json", "\n", "{\n", "  ", '"name', '":', ' "', "get", "_time", '",\n'], (10, 11)),  # pretty
        (["```python\nx = 1\n```", "\n", '{"name": "get_time"'], None),  # a code block's closing fence
        (["```python\nx = 1\n```\n", "```json\n", '{"name": "get_time"'], (2, 2)),  # a fence after it
    ],
)
def test_a_fenced_call_opens_once_it_names_an_offered_function(
    family: str, pieces: list[str], opened: tuple[int, int] | None
) -> None:
    """In every family that reads fenced calls, with its own calls held or not: the fence opens a call only once
    the name is whole and offered, the fence's tokens replayed with it."""
    grammar = _grammar(family)
    assert grammar.fenced
    assert _opened_at(grammar, pieces) == opened


@pytest.mark.parametrize("family", ["hermes", "mistral", "granite"])
@pytest.mark.parametrize(
    ("pieces", "opened"),
    [
        (["\n", '{"', "name", '":', ' "', "get", "_time", '"'], (7, 7)),  # once the name is whole
        (['[{"name": "get_weather", "'], (0, 1)),
        (['{"name": "get_'], None),  # a name begun: not yet taken for a call
        (['{"name": "Paris", "country": "France"}'], None),  # other JSON stays text
        (["Sure: ", '{"name": "get_time"'], None),  # not where the answer starts
    ],
)
def test_a_bare_call_opens_where_the_answer_starts_in_every_family_that_reads_one(
    family: str, pieces: list[str], opened: tuple[int, int] | None
) -> None:
    """Small models write a bare call whatever their template teaches (Qwen2.5-Coder under Hermes tags): it opens
    a call at the answer's start once it names an offered function whole."""
    grammar = _grammar(family)
    assert grammar.bare and grammar.opening != BARE_CALL_OPENING
    assert _opened_at(grammar, pieces) == opened


def test_mistrals_own_calls_are_held_where_its_template_writes_them_as_json() -> None:
    """Nemo's and 7B v0.3's templates write `[TOOL_CALLS]` and a JSON list; Small 3.2's and Ministral 3's write
    `name[ARGS]{…}`: each is held from its marker, while what follows it may become an offered name."""
    nemo = _grammar("mistral", template=NEMO_TEMPLATE)
    assert nemo.tags == ("[TOOL_CALLS]", None) and nemo.fenced and nemo.bare
    assert _opened_at(nemo, ["Checking.", "[TOOL_CALLS]", "[{"]) == (1, 1)
    assert _opened_at(nemo, ["[TOOL_CALLS]get_weather"]) is None  # more than the grammar takes in the token
    named = _grammar("mistral", template=NAMED_TEMPLATE)
    assert named.tags == ("[TOOL_CALLS]", None) and named.named == MISTRAL_CALLS
    assert _opened_at(named, ["Checking.", "[TOOL_CALLS]", "get", "_weather", "[ARGS]"]) == (1, 1)
    assert _opened_at(named, ["[TOOL_CALLS]get_"]) == (0, 1)  # a name begun: one of the functions'
    assert _opened_at(named, ["[TOOL_CALLS]Paris"]) is None
    other = _grammar("mistral", template="{{- '[TOOL_CALLS]' + something_else }}")  # neither form
    assert other.opening is None and other.fenced and other.bare


def test_kimi_k2s_and_deepseeks_calls_are_held_from_their_sections_opening() -> None:
    """Kimi K2's and DeepSeek's calls are each named between tokens of the family's own, in a section: held from the
    section's opening, while what follows it may become an offered function's call (DeepSeek R1's form, with
    `function` before the name and the arguments in a fence, where the template writes it)."""
    kimi = _grammar("kimi_k2")
    assert kimi.tags == ("<|tool_calls_section_begin|>", "<|tool_calls_section_end|>") and kimi.named == KIMI_K2_CALLS
    section = "<|tool_calls_section_begin|>"
    assert _opened_at(kimi, ["Checking.", section, "<|tool_call_begin|>", "functions", ".get"]) == (1, 1)
    assert _opened_at(kimi, [section + "\n<|tool_call_begin|>functions.get_"]) == (0, 1)  # a name begun
    assert _opened_at(kimi, [section + "<|tool_call_begin|>func"]) == (0, 1)  # the head so far
    assert _opened_at(kimi, [section + "<|tool_call_begin|>functions.Paris"]) is None  # no function's name
    assert _opened_at(kimi, [section + "get_weather"]) is None  # not as the template writes a call
    assert _grammar("deepseek").named == DEEPSEEK_CALLS
    r1 = _grammar("deepseek", template=R1_TEMPLATE)
    assert r1.named == DEEPSEEK_R1_CALLS and r1.tags is not None
    assert _opened_at(r1, [r1.tags[0] + r1.named.head("get")]) == (0, 1)
    assert _opened_at(r1, [r1.tags[0] + DEEPSEEK_CALLS.head("get")]) is None  # V3.1's form, not R1's


def test_pythonic_calls_are_held_from_their_tag_once_an_offered_functions_call_begins() -> None:
    lfm = _grammar("pythonic")
    assert lfm.pythonic and lfm.tags == ("<|tool_call_start|>", "<|tool_call_end|>")
    assert not lfm.fenced and not lfm.bare  # (its values' grammar reads Python's literals, which JSON calls do not)
    assert _opened_at(lfm, ["Checking.", "<|tool_call_start|>", "[", "get"]) == (1, 1)
    assert _opened_at(lfm, ["<|tool_call_start|>[get_"]) == (0, 1)
    assert _opened_at(lfm, ["<|tool_call_start|>[Paris"]) is None  # no offered function
    assert _opened_at(lfm, ['<|tool_call_start|>{"name"']) is None  # JSON, not a pythonic list
    llama4 = _grammar("pythonic", template="<|python_start|>")
    assert llama4.tags == ("<|python_start|>", "<|python_end|>")


async def test_pythonic_arguments_are_held_to_their_schema_as_python_reads_them() -> None:
    """Keywords in the order they are declared (a required one always, another perhaps), each value JSON of its
    schema where Python's literals may stand for JSON's; names Python would not read as names have no grammar."""
    from oasis.engines.llamacpp.engine import LlamaCppEngine, _call_grammar_rules
    from oasis.settings import ModelSpec

    properties = {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "late": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
        "temp": {"type": "number"},
    }
    function = {"name": "forecast", "parameters": {"type": "object", "properties": properties, "required": ["city"]}}
    free = {"name": "log", "parameters": {"type": "object"}}
    rules = _call_grammar_rules(_grammar("pythonic", plan=ToolPlan("auto", [function, free], True, False))).encode()
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256)))
    await engine.start()
    try:

        def takes(calls: str) -> bool:
            return _takes(engine, rules, f"<|tool_call_start|>[{calls}]<|tool_call_end|>")

        for calls in (
            'forecast(city="Oslo")',
            'forecast(city="a \\"b\\" \\n", days=3, late=True, note=None)',
            'forecast(city="x",days=-2,late=false,note="y"), forecast(city="z")',
            'forecast(city="caf\\u00e9 😀", days=1, temp=-2.5e10)',
            'log(), log(iff=1, True_=2, x={"a": [1.5e-3, None]}, format="f")',  # any keywords but Python's own
        ):
            assert takes(calls), calls
        for calls in (
            "forecast()",  # a required keyword missing
            'forecast(days=3, city="Oslo")',  # not in the declared order
            'forecast(city="Oslo", days=three)',
            'forecast(city="Oslo", days=007)',  # Python reads no leading zeros
            'forecast(city="Oslo", wind=3)',
            "forecast(city='Oslo')",  # (JSON's strings, which Python reads alike)
            'forecast(city="a\\/b")',  # an escape Python reads otherwise than JSON
            'forecast(city="\\ud83d\\ude00")',  # (Python keeps the halves of a pair apart, which JSON joins)
            'forecast(city="x", temp=1e999)',  # no finite number
            "log(x=1e999)",
            "log(if=1)",  # a keyword Python reads as no name
            "log(None=1)",
            'get_time(city="Oslo")',
        ):
            assert not takes(calls), calls
    finally:
        await engine.close()
    hyphened = {"name": "get-time", "parameters": {"type": "object"}}
    with pytest.raises(UnusableSchema):
        _call_grammar_rules(_grammar("pythonic", plan=ToolPlan("auto", [hyphened], True, False)))


def test_gemma_4s_calls_are_held_from_their_tag_once_an_offered_functions_call_begins() -> None:
    gemma = _grammar("gemma4")
    assert gemma.gemma4 and gemma.tags == ("<|tool_call>", "<tool_call|>")
    assert _opened_at(gemma, ["Checking.", "<|tool_call>", "call", ":get"]) == (1, 1)  # the tag: nothing after it
    assert _opened_at(gemma, ["<|tool_call>call:get_time{"]) is None  # more than an opening in one token
    assert _opened_at(gemma, ["<|tool_call>call:Paris"]) is None  # no offered function
    assert _opened_at(gemma, ["<|tool_call>get_time"]) is None  # not as Gemma writes a call


async def test_gemma_4s_arguments_are_held_to_their_schema_in_gemmas_syntax() -> None:
    """Each property in the order it is declared (a required one always, another perhaps), as its schema types it:
    a string between `<|"|>` quotes holding none of the markup that would end it where the reader reads it, one of
    an `enum`, integers, numbers, literals, lists and objects of their own schemas."""
    from oasis.engines.llamacpp.engine import LlamaCppEngine, _call_grammar_rules
    from oasis.settings import ModelSpec

    properties = {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "units": {"enum": ["metric", "imperial"]},
        "hours": {"type": "array", "items": {"type": "number"}},
        "when": {"type": "object", "properties": {"late": {"type": "boolean"}}, "required": ["late"]},
        "note": {"type": ["string", "null"]},
        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
    }
    function = {"name": "forecast", "parameters": {"type": "object", "properties": properties, "required": ["city"]}}
    rules = _call_grammar_rules(_grammar("gemma4", plan=ToolPlan("auto", [function], False, False))).encode()
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256)))
    await engine.start()
    try:

        def takes(arguments: str) -> bool:
            return _takes(engine, rules, f"<|tool_call>call:forecast{{{arguments}}}<tool_call|>")

        quote = '<|"|>'
        for arguments in (
            f"city:{quote}Oslo{quote}",
            f"city:{quote}a <b> <tool_call {quote},days:3,units:{quote}metric{quote},hours:[1,2.5,-1e3]",
            f"city:{quote}{quote},when:{{late:false}},note:null",
            f"city:{quote}x{quote},note:{quote}y{quote}",
            f"city:{quote}x{quote},hours:[1e99],counts:{{São:1,123:2,a-b.c:3}}",  # a map's keys as written
        ):
            assert takes(arguments), arguments
        for arguments in (
            "",  # a required property missing
            f"days:3,city:{quote}Oslo{quote}",  # not in the declared order
            f"city:{quote}Oslo{quote},days:three",
            f"city:{quote}Oslo{quote},days:1.5",
            f"city:{quote}Oslo{quote},units:{quote}kelvin{quote}",
            f"city:{quote}Oslo{quote},when:{{}}",
            f"city:{quote}Oslo{quote},wind:3",  # a property not declared
            f"city:{quote}a <tool_call|> b{quote}",  # the call's closing inside a string
            f"city:{quote}a <turn|> b{quote}",
            'city:"Oslo"',  # JSON's quotes
            f"city: {quote}Oslo{quote}",  # blank space Gemma does not write
            f"city:{quote}Oslo{quote},hours:[1e999]",  # no finite number (JSON has no infinity)
            f"city:{quote}Oslo{quote},counts:{{a b:1}}",  # a key the reader would read otherwise
        ):
            assert not takes(arguments), arguments
    finally:
        await engine.close()


async def test_a_harmony_call_is_held_to_a_header_its_reader_reads_and_to_its_arguments_schema() -> None:
    from oasis.engines.llamacpp.engine import LlamaCppEngine, _call_grammar_rules
    from oasis.settings import ModelSpec

    rules = _call_grammar_rules(_grammar("harmony")).encode()
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256)))
    await engine.start()
    try:
        arguments = '<|message|>{"city": "Oslo"}'
        for header in (
            "<|channel|>commentary to=functions.get_weather <|constrain|>json",
            "<|start|>assistant<|channel|>analysis to=functions.get_weather",
            "<|start|>assistant to=functions.get_weather<|channel|>commentary json",
            "to=functions.get_weather<|channel|>commentary <|constrain|>json",
        ):
            assert _takes(engine, rules, header + arguments), header
        for header in (
            "<|channel|>commentaryto=functions.get_weather",  # the reader's channel `commentaryto`, no recipient
            "<|channel|>final to=functions.get_weather",
            "<|channel|>commentary to=functions.get_weatherjson",  # the reader's name `get_weatherjson`
            "<|start|>assistant to=functions.get_weather",  # no channel: no message the reader reads
            "<|channel|>commentary to=functions.get_forecast",
        ):
            assert not _takes(engine, rules, header + arguments), header
        assert not _takes(engine, rules, '<|channel|>commentary to=functions.get_weather<|message|>{"city": 3}')
    finally:
        await engine.close()


def test_gemma_4s_rules_write_only_what_the_reader_reads_back_as_written() -> None:
    """A choice (`enum`, `const`) that Gemma's syntax would not give back as it is (markup inside a string, a key the
    reader reads otherwise) is held to the syntax alone; types of any name make rules of valid names."""
    from oasis.engines.llamacpp.gemma_grammar import gemma_rules

    parameters = {
        "type": "object",
        "properties": {
            "fine": {"enum": [["a", {"k": 1.5}], None]},
            "marked": {"enum": [['a<|"|>b']]},
            "keyed": {"const": {"a:b": 1}},
            "typed": {"type": ["x y", "first", "string"]},
        },
    }
    rules, (arguments,) = gemma_rules([parameters])
    written = "\n".join(rules)
    assert '"[<|\\"|>a<|\\"|>,{k:1.5}]"' in written  # (as a GBNF string)
    assert 'a<|\\"|>b' not in written and "a:b" not in written
    assert all(re.fullmatch(r"[a-zA-Z0-9-]+ ::= .+", rule) for rule in rules)
    assert arguments == "oasis-gemma-arguments-0"


def test_gemma_4s_reader_keeps_a_number_json_cannot_write_as_its_text() -> None:
    text = "<|tool_call>call:get_time{big:1e999,small:-1e999,fine:1e5}<tool_call|>"
    (call,) = _calls_read("gemma4", text)
    assert json.loads(call.arguments) == {"big": "1e999", "small": "-1e999", "fine": 100000.0}


def test_harmonys_calls_are_held_from_the_header_that_addresses_a_function() -> None:
    """gpt-oss addresses a call in its channel's header or in its role's (the role's header written, or the
    prompt's): held from the header once what follows `to=functions.` begins an offered function's name, as
    llama-server's triggers for gpt-oss hold it; a recipient written inside a message's body is text."""
    harmony = _grammar("harmony")
    assert harmony.harmony and harmony.opening is not None and harmony.thinking is None
    assert not harmony.fenced and not harmony.bare  # harmony's reader reads neither
    thought = ["<|channel|>", "analysis", "<|message|>", "Need the weather.", "<|end|>", "<|start|>", "assistant"]
    addressed = ["<|channel|>", "commentary", " to", "=", "functions", ".get"]
    assert _opened_at(harmony, [*thought, *addressed]) == (12, 8)  # from the role's header
    assert _opened_at(harmony, addressed) == (5, 6)
    assert _opened_at(harmony, [*thought, " to", "=functions", ".get_time"]) == (9, 5)  # addressed in the role
    assert _opened_at(harmony, [" to", "=functions", ".get_time"]) == (2, 3)  # ... that the prompt opened
    assert _opened_at(harmony, ["<|channel|>analysis to=functions.get_weather"]) == (0, 1)  # from the analysis
    assert _opened_at(harmony, ["<|channel|>commentary to=functions.Paris"]) is None  # no function's name
    assert _opened_at(harmony, ["<|channel|>final to=functions.get"]) is None  # the answer's channel
    assert _opened_at(harmony, ["<|channel|>commentaryto=functions.get"]) is None  # the reader's `commentaryto`
    assert _opened_at(harmony, [*thought[:3], "I could send it to=functions.get_time", " now."]) is None  # text


@pytest.mark.parametrize(
    ("family", "text", "start"),
    [
        (
            "hermes",
            'A block:\n```python\nx = {"name": "get_time"}\n```\nand JSON: ```json\n{"name": "Oslo"}\n```\n'
            '```json\n{"name": "get_time", "arguments": {}}\n```',
            '```json\n{"name": "get_time"',
        ),
        ("hermes", '\n\n{\n  "name": "get_weather",\n  "arguments": {"city": "Oslo"}\n}', "{"),
        (  # a code block's closing fence before JSON naming a function: not an opening
            "hermes",
            'Code:\n```\nx\n```\n{"name": "get_time", "arguments": {}} is one.\n'
            '```json\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n```',
            '```json\n{"name": "get_time", "arguments": {"zone"',
        ),
        ("mistral", '```\n{"name": "Oslo"}\n``` [TOOL_CALLS]get_time[ARGS]{"zone": "UTC"}', "[TOOL_CALLS]"),
        (
            "harmony",
            "<|channel|>analysis<|message|>A header says to=functions.get_time first.<|end|><|start|>assistant"
            '<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{"zone": "UTC"}',
            "<|start|>assistant<|channel|>",
        ),
        (
            "kimi_k2",
            "Calls look like <|tool_call_begin|>x. <|tool_calls_section_begin|>\n"
            '<|tool_call_begin|>functions.get_time:2<|tool_call_argument_begin|>{"zone": "UTC"}<|tool_call_end|>\n'
            "<|tool_calls_section_end|>",
            "<|tool_calls_section_begin|>",
        ),
    ],
)
def test_the_engine_and_the_service_agree_on_where_a_call_opened(family: str, text: str, start: str) -> None:
    """The watch (engine) says at which token a call opened; the service reads the calls from the same place,
    whatever else in the text looks like an opening (a family's own opening tag opens a call wherever it ends a
    token, as llama-server's trigger does)."""
    from oasis.engines.text import SampledToken
    from oasis.services.chat.call_stream import OpenedCalls

    grammar = _grammar(family, template=NAMED_TEMPLATE)
    opened = _opened_at(grammar, list(text))
    assert opened is not None
    reading = OpenedCalls.held_by(grammar, {function["name"]: function for function in PLAN.functions})
    for index, char in enumerate(text):
        reading.feed(char, [SampledToken(1, char.encode(), call_opened=index == opened[0])])
    assert reading.start == text.index(start) and reading.finished
    whole = _calls_read(family, text[reading.start :])
    assert whole
    assert [(call.name, call.arguments) for call in reading.calls] == [(c.name, c.arguments) for c in whole]


def test_a_call_does_not_open_inside_the_thinking() -> None:
    thinking = ("<think>", "</think>")
    pieces = ["<think>", "I could write <tool_call>", "\n", "here.", "</think>", "\n\n", "<tool_call>", "\n"]
    assert _opened_at(_grammar("hermes", thinking), pieces) == (6, 1)
    assert _opened_at(_grammar("hermes", thinking, thinking_open=True), pieces[1:]) == (5, 1)
    # a reply that does not think opens a call as any other
    assert _opened_at(_grammar("hermes", thinking), ["Checking.", "<tool_call>"]) == (1, 1)
    assert _opened_at(_grammar("json", thinking), ["<think>ok</think>", '{"name":']) == (1, 1)


def test_where_the_family_ends_its_thinking_with_a_call_the_call_opens_there() -> None:
    """Qwen3.5's and Qwen3-Coder's templates: a call may open inside the thinking, which it ends (as the reader
    reads it); the thinking's own closing still ends it first where it comes first."""
    thinking, ended_by = ("<think>", "</think>"), ("<tool_call>",)
    xml = _grammar("hermes", thinking, template=XML_TEMPLATE, thinking_ended_by=ended_by)
    assert _opened_at(xml, ["<think>", "I will call it.", "\n", "<tool_call>", "\n"]) == (3, 1)
    assert _opened_at(replace(xml, thinking_open=True), ["I will", " call it.", "\n\n", "<tool_call>"]) == (3, 1)
    assert _opened_at(xml, ["<think>", "ok", "</think>", "\n\n", "<tool", "_call", ">\n"]) == (6, 3)
    # the tag split across tokens is found where it ends, though it began before the last search
    assert _opened_at(replace(xml, thinking_open=True), ["I will <to", "ol_c", "all>", "\n<func"]) == (2, 3)


@pytest.mark.parametrize(
    ("pieces", "opened"),
    [
        (["<tool_call>", "\n<", "function", "=get"], (0, 1)),  # a special token: nothing after it yet
        (["Sure.", "<tool_call>\n<function=get_time>"], (1, 1)),  # a function's whole opening in the same token
        (["<tool_call>\n<function=get_date>"], None),  # no offered function: not held
        (["<tool_call>\n{", '"name"'], None),  # JSON in a family that writes XML: not held
    ],
)
def test_an_xml_call_opens_at_its_tag_where_what_follows_begins_an_offered_functions_call(
    pieces: list[str], opened: tuple[int, int] | None
) -> None:
    assert _opened_at(_grammar("hermes", template=XML_TEMPLATE), pieces) == opened


def test_forced_and_custom_calls_and_families_that_read_no_fences_have_no_call_grammar() -> None:
    assert call_grammar(ToolPlan("required", [WEATHER], True, False), "hermes", None, False, noted=True) is None
    assert (
        call_grammar(
            ToolPlan("auto", [WEATHER], True, False, frozenset({"get_weather"})), "hermes", None, False, noted=True
        )
        is None
    )
    assert call_grammar(ToolPlan("auto", [WEATHER], True, True), "json", None, False, noted=True) is None  # `functions`
    # families whose own calls are not held: a fenced call and a bare one, where the family reads them
    mistral = call_grammar(PLAN, "mistral", None, False, noted=True)
    assert mistral is not None and mistral.opening is None and mistral.fenced and mistral.bare
    # Command R's own calls name themselves `tool_name`: those are held, not fenced or bare ones named `name`
    command_r = call_grammar(PLAN, "command_r", None, False, noted=True)
    assert command_r is not None and command_r.tags == ("<|START_ACTION|>", "<|END_ACTION|>")
    assert not command_r.fenced and not command_r.bare
    command_r_plus = call_grammar(PLAN, "command_r_plus", None, False, noted=True)  # fences of its own
    assert command_r_plus is not None and command_r_plus.opening is None and not command_r_plus.fenced
    assert command_r_plus.bare
    deepseek = call_grammar(PLAN, "deepseek", None, False, noted=True)  # fences of its own, inside its calls
    assert deepseek is not None and deepseek.named is not None and not deepseek.fenced and deepseek.bare
    # a template that writes the tools itself, in no family known: no note asked for bare calls, held once named
    unnoted = call_grammar(PLAN, "json", None, False, noted=False)
    assert unnoted is not None and unnoted.opening is None and unnoted.fenced and unnoted.bare
    # a template teaching XML inside `<tool_call>` tags (Qwen3-Coder's, Qwen3.5's): its calls are held as XML
    xml = call_grammar(PLAN, "hermes", None, False, noted=False, template=XML_TEMPLATE)
    assert xml is not None and xml.xml == QWEN3_CODER_CALLS and xml.opening == "<tool_call>" and xml.fenced
    # GLM's and MiniMax-M2's own markup, whatever the template
    assert _grammar("glm").xml == GLM_CALLS and _grammar("minimax_m2").xml == MINIMAX_M2_CALLS
    # DSML's, in V3.2's tags or, where the template writes them, V4's
    dsml, dsml_v4 = _grammar("dsml"), _grammar("dsml", template=DSML_V4_TEMPLATE)
    assert dsml.xml == dsml_v4.xml == DSML_CALLS and dsml.tags != dsml_v4.tags
    assert dsml_v4.tags == ("<\uff5cDSML\uff5ctool_calls>", "</\uff5cDSML\uff5ctool_calls>")
    # Llama 3's own calls are bare, their arguments `parameters`
    llama3 = call_grammar(PLAN, "llama3", None, False, noted=False)
    assert llama3 is not None and llama3.opening is None and llama3.bare
    assert "parameters" in json.dumps(llama3.schema) and '"arguments"' not in json.dumps(llama3.schema)
    odd = ToolPlan("auto", [{"name": "get.weather"}], True, False)  # a name a regex would read otherwise
    assert call_grammar(odd, "hermes", None, False, noted=True) is None


async def test_a_call_that_opens_is_written_to_its_functions_schema() -> None:
    """SmolLM2 continues a list of tagged JSON objects with another about a city; held from the tag on, what it
    writes is a call to an offered function with arguments that fit it, and the one token that opened it says so."""
    from oasis.engines.llamacpp.engine import LlamaCppEngine
    from oasis.settings import ModelSpec

    examples = [{"name": "Rome", "country": "Italy"}, {"name": "Oslo", "country": "Norway"}]
    text = "Cities:\n" + "".join(f"<tool_call>\n{json.dumps(example)}\n</tool_call>\n" for example in examples)
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=512)))
    await engine.start()
    try:
        prompt = engine.tokenize(text, add_special=True)

        async def written(grammar: CallGrammar | None, **sampling: Any) -> tuple[str, list[Any]]:
            params = SamplingParams(max_tokens=60, **{"temperature": 0, **sampling}, call_grammar=grammar)
            tokens = [token async for token in engine.generate(prompt, params)]
            return b"".join(token.piece for token in tokens).decode(), tokens

        free, free_tokens = await written(None)
        assert free.startswith("<tool_call>") and '"get_weather"' not in free  # another city, as the examples
        assert not any(token.call_opened for token in free_tokens)
        # parallel_tool_calls false: one call, then the grammar is whole and only the end may follow
        held, tokens = await written(_grammar("hermes", plan=replace(PLAN, parallel=False)))
        assert held.startswith("<tool_call>")
        opening = engine.tokenize("<tool_call>", add_special=False)
        assert [index for index, token in enumerate(tokens) if token.call_opened] == [len(opening) - 1]
        functions = {function["name"]: function for function in PLAN.functions}
        (call,) = read_calls(held, FORMATS["hermes"], functions, final=True).calls
        assert call.name in functions and fits(PLAN, call.name, call.arguments)
        assert held.rstrip().endswith("</tool_call>") and tokens[-1].finish_reason == "stop"
        # At a temperature, drawn in numpy until the call opens and by llama.cpp's chain with the grammar after it
        opened = 0
        for seed in range(6):
            held, tokens = await written(
                _grammar("hermes", plan=replace(PLAN, parallel=False)), temperature=0.3, seed=seed
            )
            calls = read_calls(held, FORMATS["hermes"], functions, final=True).calls
            if any(token.call_opened for token in tokens):
                (call,) = calls
                assert fits(PLAN, call.name, call.arguments) and tokens[-1].finish_reason == "stop"
                opened += 1
        assert opened >= 3
    finally:
        await engine.close()


async def _written(
    engine: Any, prompt: list[int], grammar: CallGrammar | None, max_tokens: int = 60
) -> tuple[str, Any]:
    """What the engine writes after `prompt` at temperature 0 (held by `grammar`), and its tokens."""
    params = SamplingParams(max_tokens=max_tokens, temperature=0, call_grammar=grammar)
    tokens = [token async for token in engine.generate(prompt, params)]
    return b"".join(token.piece for token in tokens).decode(), tokens


@pytest.mark.parametrize("family", ["hermes", "mistral"])
async def test_a_fenced_call_is_written_to_its_functions_schema(family: str) -> None:
    """SmolLM2 continues fenced calls whose arguments do not fit (`town`, where `city` is required): free, it
    writes another such; held from where it names the function, the arguments fit and the fence ends the reply,
    whether or not the family's own calls are held."""
    from oasis.engines.llamacpp.engine import LlamaCppEngine
    from oasis.settings import ModelSpec

    examples = [{"name": "get_weather", "arguments": {"town": town}} for town in ("Rome", "Oslo")]
    text = "Weather lookups:\n" + "".join(f"```json\n{json.dumps(example)}\n```\n" for example in examples)
    functions = {function["name"]: function for function in PLAN.functions}
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=512)))
    await engine.start()
    try:
        prompt = engine.tokenize(text, add_special=True)
        free, free_tokens = await _written(engine, prompt, None)
        (call, *_) = read_calls(free, FORMATS[family], functions, final=True).calls
        assert call.name == "get_weather" and not fits(PLAN, call.name, call.arguments)
        assert not any(token.call_opened for token in free_tokens)
        held, tokens = await _written(engine, prompt, _grammar(family, plan=replace(PLAN, parallel=False)))
        assert held.startswith("```json\n")
        opened = [index for index, token in enumerate(tokens) if token.call_opened]
        assert len(opened) == 1 and '"get_weather"' in b"".join(t.piece for t in tokens[: opened[0] + 1]).decode()
        (call,) = read_calls(held, FORMATS[family], functions, final=True).calls
        assert call.name == "get_weather" and fits(PLAN, call.name, call.arguments)
        assert held.rstrip().endswith("```") and tokens[-1].finish_reason == "stop"
    finally:
        await engine.close()


async def test_an_xml_call_is_written_to_its_functions_schema() -> None:
    """SmolLM2 continues XML calls (as Qwen3-Coder's template writes them) whose `days` is a word where the function
    asks for an integer: free, it writes another such; held from the tag on, each parameter is written as its
    schema says (an integer as JSON, a string as text, one of an enum's values) and the call fits."""
    from oasis.engines.llamacpp.engine import LlamaCppEngine
    from oasis.settings import ModelSpec

    forecast = {
        "name": "get_forecast",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
                "units": {"type": "string", "enum": ["metric", "imperial"]},
            },
            "required": ["city", "days", "units"],
        },
    }
    plan = ToolPlan("auto", [forecast], False, False)
    examples = [("Rome", "three", "celsius"), ("Oslo", "five", "celsius")]
    text = "Forecast lookups:\n" + "".join(
        f"<tool_call>\n<function=get_forecast>\n<parameter=city>\n{city}\n</parameter>\n<parameter=days>\n{days}\n"
        f"</parameter>\n<parameter=units>\n{units}\n</parameter>\n</function>\n</tool_call>\n"
        for city, days, units in examples
    )
    functions = {"get_forecast": forecast}
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=512)))
    await engine.start()
    try:
        prompt = engine.tokenize(text, add_special=True)
        free, free_tokens = await _written(engine, prompt, None, max_tokens=80)
        (call, *_) = read_calls(free, FORMATS["hermes"], functions, final=True).calls
        assert call.name == "get_forecast" and not fits(plan, call.name, call.arguments)
        assert not any(token.call_opened for token in free_tokens)
        held, tokens = await _written(
            engine, prompt, _grammar("hermes", plan=plan, template=XML_TEMPLATE), max_tokens=80
        )
        assert held.startswith("<tool_call>\n<function=get_forecast>")
        opening = engine.tokenize("<tool_call>", add_special=False)
        assert [index for index, token in enumerate(tokens) if token.call_opened] == [len(opening) - 1]
        (call,) = read_calls(held, FORMATS["hermes"], functions, final=True).calls
        arguments = json.loads(call.arguments)
        assert isinstance(arguments["days"], int) and arguments["units"] in ("metric", "imperial")
        assert fits(plan, call.name, call.arguments)
        assert held.rstrip().endswith("</tool_call>") and tokens[-1].finish_reason == "stop"
    finally:
        await engine.close()


CALLS_IN_FAMILIES = [
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'),
    (
        "hermes",
        '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>\n<tool_call>\n'
        '[{"name": "get_weather", "arguments": {"city": "Oslo"}}]\n</tool_call>',
    ),
    ("nemotron", '<TOOLCALL>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</TOOLCALL>'),
    ("tool_calls_tags", '<tool_calls>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_calls>'),
    ("granite", '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}]'),
    ("json", '[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]'),
    ("hermes", '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'),
    (
        "json",
        '```\n[{"name": "get_time", "arguments": {}}]\n```\n\n```json\n{"name": "get_time", "arguments": {}}\n```',
    ),
    ("mistral", '```json\n[{"name": "get_weather", "arguments": {"city": "Paris"}}]\n```'),
    ("hermes", '{"name": "get_time", "arguments": {}}'),
    # calls listed one after another, bare and in a fence, as the reader reads them (parallel calls)
    ("hermes", '{"name": "get_time", "arguments": {}}\n{"name": "get_weather", "arguments": {"city": "Oslo"}}'),
    ("json", '{"name": "get_time", "arguments": {}}; {"name": "get_time", "arguments": {}}'),
    ("mistral", '```json\n{"name": "get_time", "arguments": {}}\n{"name": "get_time", "arguments": {}}\n```'),
    # pretty-printed, as Qwen2.5-Coder writes its calls
    ("hermes", '```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris"\n  }\n}\n```'),
    ("json", '[\n  {\n    "name": "get_time",\n\n    "arguments": {}\n  }\n]'),
    ("mistral", '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris"}}'),
    (
        "mistral",
        '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]',
    ),
    # ... Nemo's with the ids its template teaches (not kept: a call's id is oasis's to give); Command R7B's and
    # Command A's, each call's id first, its name `tool_name`, its arguments `parameters`
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "a1B2c3D4e"}]'),
    (
        "command_r",
        '<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "get_weather", "parameters": {"city": "Paris"}},\n'
        '    {"tool_call_id": "1", "tool_name": "get_time", "parameters": {}}\n]<|END_ACTION|>',
    ),
    ("mistral:named", '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}\n[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{}'),
    # DeepSeek V3.2's DSML (MiniMax-M2's markup, each value marked text) and V4's, in its own tags
    (
        "dsml",
        '<|DSML|function_calls>\n<|DSML|invoke name="get_weather">\n'
        '<|DSML|parameter name="city" string="true">Paris</|DSML|parameter>\n</|DSML|invoke>\n'
        '<|DSML|invoke name="get_time">\n<|DSML|parameter name="zone" string="true">UTC</|DSML|parameter>\n'
        "</|DSML|invoke>\n</|DSML|function_calls>".replace("|DSML|", "\uff5cDSML\uff5c"),
    ),
    (
        "dsml:v4",
        '<|DSML|tool_calls>\n<|DSML|invoke name="get_time">\n</|DSML|invoke>\n</|DSML|tool_calls>'.replace(
            "|DSML|", "\uff5cDSML\uff5c"
        ),
    ),
    # each call named between tokens of its own in one section: Kimi K2's, DeepSeek V3.1's, DeepSeek R1's
    (
        "kimi_k2",
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:3<|tool_call_argument_begin|>"
        '{"city": "Paris"}<|tool_call_end|>\n<|tool_call_begin|>functions.get_time<|tool_call_argument_begin|>{}'
        "<|tool_call_end|><|tool_calls_section_end|>",
    ),
    (
        "deepseek",
        "<\uff5ctool\u2581calls\u2581begin\uff5c><\uff5ctool\u2581call\u2581begin\uff5c>get_weather"
        '<\uff5ctool\u2581sep\uff5c>{"city": "Paris"}<\uff5ctool\u2581call\u2581end\uff5c>'
        "<\uff5ctool\u2581calls\u2581end\uff5c>",
    ),
    # harmony's (gpt-oss), addressed in the channel's header or in the role's
    (
        "harmony",
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>"
        '{"city": "Paris"}',
    ),
    ("harmony", ' to=functions.get_time<|channel|>commentary json<|message|>{"zone": "UTC"}'),
    ("harmony", "<|channel|>analysis to=functions.get_time<|message|>{}"),
    # Gemma 4's, its arguments in its own syntax (parallel calls one after another)
    (
        "gemma4",
        '<|tool_call>call:get_weather{city:<|"|>São <b>Paulo</b>, "SP" <|"|>}<tool_call|>'
        '<|tool_call>call:get_time{zone:<|"|>UTC<|"|>,hours:[1,2.5,-3e2],fmt:{h24:true,sep:null}}<tool_call|>',
    ),
    ("gemma4", "<|tool_call>call:get_time{}<tool_call|>"),
    # GigaChat 3's call message and 3.1's call token, each before a JSON call
    (
        "gigachat",
        '<|message_sep|>\n\nfunction call<|role_sep|>\n{"name": "get_weather", "arguments": {"city": "Paris"}}',
    ),
    ("gigachat:v3.1", '<|function_call|>{"name": "get_time", "arguments": {}}'),
    # Apertus's list of calls keyed by their names
    ("apertus", '<|tools_prefix|>[{"get_weather": {"city": "Paris"}}, {"get_time": {}}]<|tools_suffix|>'),
    ("apertus", '<|tools_prefix|>{"get_time": {"zone": "UTC"}}<|tools_suffix|>'),
    # LFM2's pythonic list, Python's literals or JSON's
    (
        "pythonic",
        '<|tool_call_start|>[get_weather(city="Paris"), get_time(zone="UTC", hours=[1, 2.5], fmt={"h24": True, '
        '"sep": null}, late=False)]<|tool_call_end|>',
    ),
    ("pythonic", "<|tool_call_start|>[get_time()]<|tool_call_end|>"),
    (
        "deepseek:r1",
        "<\uff5ctool\u2581calls\u2581begin\uff5c><\uff5ctool\u2581call\u2581begin\uff5c>function"
        "<\uff5ctool\u2581sep\uff5c>get_time\n```json\n{}\n```<\uff5ctool\u2581call\u2581end\uff5c>"
        "<\uff5ctool\u2581calls\u2581end\uff5c>",
    ),
    # XML, as Qwen3-Coder's template writes calls: a string's text as written (what is no closing tag, line breaks
    # at its ends), any parameter of a function whose parameters are not named, parallel calls
    (
        "hermes:xml",
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
    ),
    (
        "hermes:xml",
        "<tool_call>\n<function=get_time>\n<parameter=zone>\nUTC\n</parameter>\n<parameter=format>\n24h\n"
        "</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=get_weather>\n<parameter=city>\n\n"
        "São <b>Paulo</b> </para <\n\n</parameter>\n</function>\n</tool_call>",
    ),
    ("hermes:xml", "<tool_call>\n<function=get_time>\n</function>\n</tool_call>"),
    # GLM's (and Ling 3's), a value as written, compact as GLM 4.7 writes it or on lines as 4.6 does; MiniMax-M2's,
    # several calls in a wrapping
    (
        "glm",
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n</tool_call>\n"
        "<tool_call>get_time<arg_key>zone</arg_key><arg_value> UTC\n</arg_value></tool_call>",
    ),
    ("ling3", "<tool_call>get_time\n</tool_call>"),
    (
        "minimax_m2",
        '<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city">Paris</parameter>\n</invoke>\n'
        '<invoke name="get_time">\n</invoke>\n</minimax:tool_call>',
    ),
    # ... and as Seed-OSS's does, in its own tags, a value on its parameter's line
    (
        "seed_oss:xml",
        "<seed:tool_call>\n<function=get_weather>\n<parameter=city>Paris</parameter>\n</function>\n</seed:tool_call>",
    ),
]


@pytest.mark.parametrize(("family", "written"), CALLS_IN_FAMILIES)
async def test_each_familys_call_grammar_takes_its_calls_whole_and_then_the_end(family: str, written: str) -> None:
    """The grammar each family's calls are held to accepts, token by token, calls as its reader reads them, then
    only the end; and the watch opens them where they start (Mistral's family under Nemo's template)."""
    from oasis.engines.llamacpp import native
    from oasis.engines.llamacpp.call_watch import ROOT
    from oasis.engines.llamacpp.chain import ChainDraw
    from oasis.engines.llamacpp.engine import LlamaCppEngine, _call_grammar_rules
    from oasis.settings import ModelSpec

    family, _, form = family.partition(":")
    grammar = _grammar(family, template=TEMPLATES.get(form, NEMO_TEMPLATE))
    calls = _calls_read(family, written)
    assert calls
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256)))
    await engine.start()
    lib = native.lib()
    try:
        assert engine._call_grammar_parses(grammar)
        rules = _call_grammar_rules(grammar).encode()
        sampler = lib.llama_sampler_init_grammar(engine._vocab, rules, ROOT.encode())
        draw = ChainDraw(engine._n_vocab)
        tokens = engine.tokenize(written, add_special=False)
        for token in tokens:
            assert draw._allows(sampler, token), engine.detokenize([token])
            lib.llama_sampler_accept(sampler, token)
        assert draw._allows(sampler, engine._eog_tokens[0])  # whole: the reply may end
        [newline] = engine.tokenize("\n", add_special=False)
        assert draw._allows(sampler, newline)
        lib.llama_sampler_accept(sampler, newline)
        assert draw._allows(sampler, engine._eog_tokens[0])  # and still after a blank line: no further call is owed
        lib.llama_sampler_free(sampler)
        pieces = [engine.token_piece(token) for token in tokens]
        opened = _opened_at(grammar, pieces)
        # opened by the token that ends the first call's name, or by the next (a fenced or a bare call's quote)
        named = len(written[: written.index(calls[0].name) + len(calls[0].name) + 1].encode())
        named_by = next(index for index, end in enumerate(itertools.accumulate(map(len, pieces))) if end >= named)
        assert opened is not None and opened[0] <= named_by, (opened, named_by)
    finally:
        await engine.close()


def _takes(engine: Any, rules: bytes, text: str) -> bool:
    """Whether the grammar `rules` takes `text`, fed one character at a time (SmolLM2 has a token for each ASCII
    one, and writes others in byte tokens)."""
    from oasis.engines.llamacpp import native
    from oasis.engines.llamacpp.call_watch import ROOT
    from oasis.engines.llamacpp.chain import ChainDraw

    lib = native.lib()
    sampler = lib.llama_sampler_init_grammar(engine._vocab, rules, ROOT.encode())
    draw = ChainDraw(engine._n_vocab)
    try:
        for character in text:
            for token in engine.tokenize(character, add_special=False):
                if not draw._allows(sampler, token):
                    return False
                lib.llama_sampler_accept(sampler, token)
        return True
    finally:
        lib.llama_sampler_free(sampler)


async def test_an_xml_parameters_text_holds_nothing_that_would_end_the_call_where_the_reader_reads_it() -> None:
    """A string parameter's text is anything but the tags the reader would end it (or its call) at, or take for
    another call's opening: a closing tag cut short, or after another `<`, is text; a whole one is refused."""
    from oasis.engines.llamacpp.engine import LlamaCppEngine, _call_grammar_rules
    from oasis.settings import ModelSpec

    grammar = _grammar("hermes", template=XML_TEMPLATE)
    opened = "<tool_call>\n<function=get_weather>\n<parameter=city>\n"
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256)))
    await engine.start()
    try:
        rules = _call_grammar_rules(grammar).encode()

        def takes(text: str) -> bool:
            return _takes(engine, rules, text)

        for text in ("a <b>c</b> <", "</par", "x </para <", "<</paramete", "a <tool_call", "</tool_calls"):
            assert takes(opened + text + "\n</parameter>\n</function>\n</tool_call>"), text
        for tag in ("</parameter>", "</function>", "</tool_call>", "<tool_call>"):
            for text in (tag, f"a{tag}b", f"<{tag}", f"</par{tag}"):
                assert not takes(opened + text + "\n</parameter>"), text
    finally:
        await engine.close()


async def test_an_xml_parameter_that_may_be_a_string_is_written_as_text_or_as_json() -> None:
    """`Optional[str]` (a string or null): the reader reads the text as written, or JSON; an integer is JSON only
    (DSML's opening says which the value is)."""
    from oasis.engines.llamacpp.engine import LlamaCppEngine, _call_grammar_rules
    from oasis.settings import ModelSpec

    note = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    function = {
        "name": "log",
        "parameters": {"type": "object", "properties": {"note": note, "days": {"type": "integer"}}},
    }
    plan = ToolPlan("auto", [function], False, False)
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256)))
    await engine.start()
    try:
        for family, template, written in [
            ("hermes", XML_TEMPLATE, "<tool_call>\n<function=log>\n<parameter=note>\n{}\n</parameter>\n{}</function>"),
            ("glm", "", "<tool_call>log\n<arg_key>note</arg_key><arg_value>{}</arg_value>\n{}"),
        ]:
            rules = _call_grammar_rules(_grammar(family, plan=plan, template=template)).encode()
            days = (
                "<parameter=days>\n{}\n</parameter>\n" if family == "hermes" else "<arg_key>days</arg_key><arg_value>{}"
            )
            for value in ("Paris, in the rain", "null", '"quoted"'):
                assert _takes(engine, rules, written.format(value, days.format("3"))), (family, value)
            assert not _takes(engine, rules, written.format("ok", days.format("three"))), family
        # DSML's opening marks which: text (`string="true"`) as written, JSON (`"false"`) to the schema
        rules = _call_grammar_rules(_grammar("dsml", plan=plan)).encode()
        call = (
            '<|DSML|function_calls>\n<|DSML|invoke name="log">\n'
            '<|DSML|parameter name="note" string="{}">{}</|DSML|parameter>\n'
            '<|DSML|parameter name="days" string="{}">{}</|DSML|parameter>\n'
        ).replace("|DSML|", "\uff5cDSML\uff5c")
        for marked, value in [("true", "Paris, in the rain"), ("true", "null"), ("false", "null"), ("false", '"a"')]:
            assert _takes(engine, rules, call.format(marked, value, "false", "3")), (marked, value)
        assert not _takes(engine, rules, call.format("false", "Paris", "false", "3"))  # text marked JSON
        assert not _takes(engine, rules, call.format("true", "ok", "true", "3"))  # an integer marked text
        # a function that declares no parameters: any, each marked either way
        free = _call_grammar_rules(_grammar("dsml")).encode()
        call = call.replace('"log"', '"get_time"').replace('"note"', '"zone"')
        assert _takes(engine, free, call.format("true", "UTC", "false", "3"))
        assert _takes(engine, free, call.format("false", '"UTC"', "true", "three"))
    finally:
        await engine.close()


def test_the_wrapping_rules_do_not_take_the_names_of_a_schemas_rules() -> None:
    """A schema's definitions name rules after themselves (`calls`, `call-root`): the wrapping's are apart."""
    from oasis.engines.llamacpp.engine import _call_grammar_rules

    parameters = {
        "type": "object",
        "properties": {"calls": {"$ref": "#/$defs/calls"}, "call-root": {"type": "string"}},
        "$defs": {"calls": {"type": "array", "items": {"type": "string"}}},
    }
    plan = ToolPlan("auto", [{"name": "batch", "parameters": parameters}], True, False)
    for family, template in [
        ("hermes", ""),
        ("granite", ""),
        ("json", ""),
        ("mistral", NAMED_TEMPLATE),
        ("hermes", XML_TEMPLATE),
        ("kimi_k2", ""),
        ("deepseek", R1_TEMPLATE),
    ]:
        grammar = call_grammar(plan, family, None, False, noted=True, template=template)
        assert grammar is not None
        rules = _call_grammar_rules(grammar)
        names = [line.split(" ::= ")[0] for line in rules.splitlines() if " ::= " in line]
        assert len(names) == len(set(names)), family


async def test_where_the_watch_opens_a_call_in_recorded_replies_the_grammar_takes_what_follows() -> None:
    """The invariant that keeps llama.cpp from throwing (which would end the process): wherever the watch opens a
    call, the call's grammar accepts the text llama.cpp then replays from the opening. Checked over every recorded
    reply of every family (tests/fixtures/model_replies.json) under its template's grammar, thinking left out (so
    openings inside it are looked at too), split into SmolLM2's tokens and into single characters."""
    from oasis.engines.llamacpp import native
    from oasis.engines.llamacpp.call_watch import ROOT
    from oasis.engines.llamacpp.chain import ChainDraw
    from oasis.engines.llamacpp.engine import LlamaCppEngine, _call_grammar_rules
    from oasis.services.chat.tool_formats import detect_format
    from oasis.settings import ModelSpec
    from tests.services.test_reply_formats import OFFERED, REPLIES, _template

    plan = ToolPlan("auto", list(OFFERED.values()), True, False)
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256)))
    await engine.start()
    lib = native.lib()
    draw = ChainDraw(engine._n_vocab)
    opened = 0
    try:
        for reply in REPLIES:
            template = _template(reply["template"])
            family = detect_format(template).name
            grammar = call_grammar(plan, family, None, False, noted="tools" not in template, template=template)
            if grammar is None:
                continue
            tokens = engine.tokenize(reply["text"], add_special=False)
            for pieces in (
                [engine.token_piece(token).decode(errors="replace") for token in tokens],
                list(reply["text"]),
            ):
                watch = CallWatch(grammar)
                for index, piece in enumerate(pieces):
                    replay = watch.add(index, piece.encode())
                    if replay is None:
                        continue
                    replayed = "".join(pieces[index + 1 - replay : index + 1])
                    found = re.search(trigger_pattern(grammar, r"\Z", kind=watch.opened), replayed)
                    assert found is not None, (reply["template"], replayed)
                    rules = _call_grammar_rules(grammar).encode()
                    sampler = lib.llama_sampler_init_grammar(engine._vocab, rules, ROOT.encode())
                    for token in engine.tokenize(replayed[found.start(1) :], add_special=False):
                        assert draw._allows(sampler, token), (reply["template"], replayed, found.start(1))
                        lib.llama_sampler_accept(sampler, token)
                    lib.llama_sampler_free(sampler)
                    opened += 1
                    break
    finally:
        await engine.close()
    assert opened > 150  # the check is not empty (38 openings when first written, 166 with gpt-oss's harmony)


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _offered_with(offered: dict[str, Any], calls: list[Any]) -> list[dict[str, Any]]:
    """The offered functions, and those a recorded reply calls that they lack or that its arguments do not fit (a
    model's own tools in the recording), each parameter typed as the recorded call's value is."""
    functions = dict(offered)
    for name, arguments in calls:
        offered_one = functions.get(name)
        # (a property not declared is no call's that llama.cpp's grammars write, as they read a schema)
        declared = (offered_one or {}).get("parameters", {}).get("properties", {})
        fitting = offered_one and fits(ToolPlan("auto", [offered_one], False, False), name, json.dumps(arguments))
        if fitting and set(arguments) <= set(declared):
            continue
        if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            properties = {key: {"type": _JSON_TYPES.get(type(value), "null")} for key, value in arguments.items()}
            functions[name] = {"name": name, "parameters": {"type": "object", "properties": properties}}
    return list(functions.values())


async def test_where_a_call_opens_in_a_recorded_reply_the_grammar_takes_it_as_the_model_wrote_it() -> None:
    """Holding a call must not change what a model writes: over every recorded reply that holds calls, under its
    template's grammar and thinking tags, as the chat service makes them, the grammar takes the calls from where
    the watch opens them as the model wrote them; what it refuses comes only after them (the reply ends there, as
    llama-server's lazy grammar ends it)."""
    from oasis.engines.llamacpp import native
    from oasis.engines.llamacpp.call_watch import ROOT
    from oasis.engines.llamacpp.chain import ChainDraw
    from oasis.engines.llamacpp.engine import LlamaCppEngine, _call_grammar_rules
    from oasis.services.chat.reasoning import think_tags
    from oasis.services.chat.tool_formats import detect_format
    from oasis.settings import ModelSpec
    from tests.services.test_reply_formats import OFFERED, REPLIES, _format_of, _template

    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256)))
    await engine.start()
    lib = native.lib()
    draw = ChainDraw(engine._n_vocab)
    [end_of_reply] = engine._eog_tokens[:1]
    held = 0
    try:
        for reply in REPLIES:
            template = _template(reply["template"])
            tags = think_tags(template)
            # (a call of a name that no request can offer, `Calendar.create_event`, has no grammar to be held by)
            if not reply["calls"] or not all(re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) for name, _ in reply["calls"]):
                continue
            reading = _format_of(template)
            plan = ToolPlan("auto", _offered_with(OFFERED, reply["calls"]), True, False)
            grammar = call_grammar(
                plan,
                detect_format(template).name,
                (tags.open, tags.close),
                reading.thinking_open or bool(reading.content_prefill),
                noted="tools" not in template,
                template=template,
                thinking_ended_by=tags.ended_by,
            )
            if grammar is None:
                continue
            watch = CallWatch(grammar)
            replay = next(
                (
                    (index, replay)
                    for index, char in enumerate(reply["text"])
                    if (replay := watch.add(index, char.encode())) is not None
                ),
                None,
            )
            if replay is None:
                continue
            first, last = replay[0] + 1 - replay[1], replay[0] + 1  # the characters replayed
            found = re.search(trigger_pattern(grammar, r"\Z", kind=watch.opened), reply["text"][first:last])
            assert found is not None
            rest = reply["text"][first + found.start(1) :]
            rules = _call_grammar_rules(grammar).encode()
            sampler = lib.llama_sampler_init_grammar(engine._vocab, rules, ROOT.encode())
            taken = ""
            for token in engine.tokenize(rest, add_special=False):
                if not draw._allows(sampler, token):
                    assert draw._allows(sampler, end_of_reply), (reply["template"], taken, rest)  # after the calls
                    break
                lib.llama_sampler_accept(sampler, token)
                taken += engine.token_piece(token).decode(errors="replace")
            lib.llama_sampler_free(sampler)
            held += 1
    finally:
        await engine.close()
    # (families whose own markup is not held, and replies without calls, are passed over: 129 held when written, 57
    # of them in XML-like markup: Qwen3-Coder's and Seed-OSS's, GLM's and Ling 3's, MiniMax-M2's, DeepSeek's DSML; 9
    # in Kimi K2's and DeepSeek's call tokens; 4 in gpt-oss's harmony; 10 in Gemma 4's syntax; 5 in Command R's
    # `tool_name` calls, and Mistral Nemo's with its ids; 17 in LFM2's pythonic lists; 4 in GigaChat's; 3 in
    # Apertus's calls keyed by name)
    assert held >= 129
