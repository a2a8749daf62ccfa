"""A forced reply's calls read as they are written (services/chat/call_stream.py): however the text arrives, the
arguments a client joins are those of the reply read whole, and what is sent of a reply cut short is their start."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from oasis.engines.text import (
    BARE_CALL_OPENING,
    DSML_CALLS,
    GLM_CALLS,
    HARMONY_CALL_OPENING,
    MINIMAX_M2_CALLS,
    MISTRAL_CALLS,
    QWEN3_CODER_CALLS,
    NamedCalls,
    SampledToken,
    XmlCalls,
)
from oasis.services.chat.call_stream import CallPiece, CallStream, OpenedCalls
from oasis.services.chat.harmony import read_harmony
from oasis.services.chat.tool_formats import FORMATS, read_calls
from oasis.services.chat.tools import _TAGGED, DEEPSEEK_CALLS, DEEPSEEK_R1_CALLS, KIMI_K2_CALLS

FUNCTIONS = {name: {"name": name} for name in ("get_weather", "save", "f")}
REPLIES = [
    '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}',
    '{ "name" :"f" , "arguments" : { } }',
    '[{"name": "f", "arguments": {"a": [1, 2.50, -0, 1e5, 1E-2, true, false, null, [], {}]}},\n'
    ' {"name": "save", "arguments": {"path": "a/b.txt", "text": "line\\none \\"quoted\\" \\\\ tab\\t end"}}]',
    '{"name": "save", "arguments": {"text": "caf\\u00e9 \\ud83d\\ude00 \\u2028 日本 \\/ \\b\\f\\r", "nested": {"deep": '
    '{"list": [{"k": "v"}, "s", 0]}}}}',
    '{"name":"f","arguments":{"lone":"\\ud800x","big":123456789012345678901234567890,"neg":-1.5e+3}}',
    '{"name": "f", "arguments": {"pair after a lone half": "\\ud800\\ud83d\\ude00", "two lone": "\\udbff\\u0041"}}',
]


def _gather(pieces: list[CallPiece], names: list[str], arguments: list[str]) -> None:
    """Joins the pieces as a client does: a call's opening names it, the rest add to its arguments."""
    for piece in pieces:
        if piece.opened:
            assert piece.index == len(names)
            names.append(piece.text)
            arguments.append("")
        else:
            arguments[piece.index] += piece.text


def _joined(reply: str, chunks: list[str]) -> tuple[list[str], list[str]]:
    stream = CallStream()
    names: list[str] = []
    arguments: list[str] = []
    for chunk in chunks:
        _gather(stream.feed(chunk), names, arguments)
    assert not stream.broken and stream.finished, reply
    assert [call.arguments for call in stream.calls] == arguments
    return names, arguments


def _splits(reply: str, rng: random.Random) -> list[list[str]]:
    whole = [reply]
    by_char = list(reply)
    chunked = []
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(reply)), 8))
        chunked.append([reply[a:b] for a, b in zip([0, *cuts], [*cuts, len(reply)], strict=True)])
    return [whole, by_char, *chunked]


@pytest.mark.parametrize("reply", REPLIES)
def test_the_pieces_join_to_the_arguments_of_the_reply_read_whole(reply: str) -> None:
    whole = read_calls(reply, FORMATS["json"], FUNCTIONS, final=True).calls
    assert whole, reply
    rng = random.Random(reply)
    for chunks in _splits(reply, rng):
        names, arguments = _joined(reply, chunks)
        assert names == [call.name for call in whole]
        assert arguments == [call.arguments for call in whole]


def test_arguments_that_are_a_string_are_read_across_pieces() -> None:
    stream = CallStream()
    for piece in ('{"name": "f", "arguments": "a lo', 'ng text"', "}"):
        stream.feed(piece)
    assert stream.finished and [(call.name, call.arguments) for call in stream.calls] == [("f", '"a long text"')]


def test_a_number_longer_than_python_reads_stops_the_reading_without_an_error() -> None:
    stream = CallStream()
    stream.feed('{"name": "f", "arguments": {"n": ' + "9" * 5000 + "}}")
    assert stream.broken and not stream.finished


def test_arguments_are_sent_as_they_are_written_not_at_the_end() -> None:
    reply = REPLIES[3]
    stream = CallStream()
    cut = reply.index("日本")
    sent = "".join(piece.text for piece in stream.feed(reply[:cut]) if not piece.opened)
    assert sent.startswith('{"text": "café 😀') and len(sent) > 10


@pytest.mark.parametrize("reply", REPLIES)
def test_a_reply_cut_anywhere_has_sent_the_start_of_its_arguments(reply: str) -> None:
    whole = read_calls(reply, FORMATS["json"], FUNCTIONS, final=True).calls
    for cut in range(len(reply)):
        stream = CallStream()
        stream.feed(reply[:cut])
        assert not stream.broken
        for call, complete in zip(stream.calls, whole, strict=False):
            assert call.name == complete.name and complete.arguments.startswith(call.arguments), (cut, call)


@pytest.mark.parametrize(
    "text", ['"just text"', '{"arguments": {}, "name": "f"}', '{"name": "f", "other": 1}', '{"name": "f"} trailing']
)
def test_what_a_forced_reply_does_not_hold_stops_the_reading(text: str) -> None:
    stream = CallStream()
    stream.feed(text)
    assert stream.broken and not stream.calls


HERMES_OPENING = "<tool_call>"
TAGGED = (
    "Let me look that up.\n<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\n</tool_call>\n<tool_call>\n'
    '{"name": "save", "arguments": {"text": "a <tool_call> inside \\"quotes\\""}}\n</tool_call>'
)


def _read_opened(
    text: str,
    opening: str | None,
    tags: tuple[str, str] | None,
    opened_at: int,
    chunks: list[str],
    *,
    fenced: bool = False,
    bare: bool = False,
    named: NamedCalls | None = None,
    xml: XmlCalls | None = None,
    harmony: bool = False,
    gemma4: bool = False,
    pythonic: bool = False,
    keyed_by_name: bool = False,
    functions: dict[str, Any] | None = None,
) -> Any:
    """Feeds `chunks` of `text` as deltas, the engine's token that opened a call ending at `opened_at` (a chunk
    that crosses it is two tokens in one delta, as a stop string's hold makes them)."""
    reading = OpenedCalls(
        opening,
        tags,
        fenced=fenced,
        bare=bare,
        named=named,
        xml=xml,
        harmony=harmony,
        gemma4=gemma4,
        pythonic=pythonic,
        keyed_by_name=keyed_by_name,
        functions=functions,
    )
    names: list[str] = []
    arguments: list[str] = []
    fed = 0
    for chunk in chunks:
        cut = opened_at - fed
        if 0 < cut < len(chunk):
            tokens = [SampledToken(1, chunk[:cut].encode(), call_opened=True), SampledToken(1, chunk[cut:].encode())]
        else:
            tokens = [SampledToken(1, chunk.encode(), call_opened=cut == len(chunk))]
        fed += len(chunk)
        _gather(reading.feed(chunk, tokens), names, arguments)
    return reading, names, arguments


def test_tagged_calls_that_opened_after_text_are_read_as_they_are_written() -> None:
    """The text before the first tag is the reply's content (the reader keeps it); from the tag on, each call's
    arguments come in pieces that join to the calls read whole, across as many calls as the reply has."""
    start = TAGGED.index(HERMES_OPENING)
    whole = read_calls(TAGGED, FORMATS["hermes"], FUNCTIONS, final=True).calls
    assert len(whole) == 2
    for chunks in _splits(TAGGED, random.Random(4)):
        reading, names, arguments = _read_opened(
            TAGGED, HERMES_OPENING, ("<tool_call>", "</tool_call>"), start + len(HERMES_OPENING), chunks
        )
        assert reading.start == start and reading.finished
        assert names == [call.name for call in whole] and arguments == [call.arguments for call in whole]
        assert [call.arguments for call in reading.calls] == arguments


def test_a_bare_call_list_and_a_call_cut_short_are_read_from_their_opening() -> None:
    listed = '[{"name": "f", "arguments": {"a": 1}}, {"name": "save", "arguments": {"text": "x"}}]'
    opening = r'(?:\[ ?)?\{ ?"name" ?:'
    reading, names, arguments = _read_opened(listed, opening, None, len('[{"name":'), list(listed))
    assert reading.start == 0 and reading.finished and names == ["f", "save"]
    assert arguments == ['{"a": 1}', '{"text": "x"}']
    cut = TAGGED[: TAGGED.index('"Paris"') + 4]
    start = cut.index(HERMES_OPENING)
    reading, names, arguments = _read_opened(cut, HERMES_OPENING, ("<tool_call>", "</tool_call>"), start + 11, [cut])
    assert not reading.finished and names == ["get_weather"] and arguments == ['{"city": "Par']


FENCED = (
    "I will check the weather.\n```json\n"
    '{"name": "get_weather", "arguments": {"city": "Paris", "note": "in `code`"}}\n```\n\n```\n'
    '[\n  {\n    "name": "save",\n    "arguments": {\n      "text": "x"\n    }\n  }\n]\n```\n'  # pretty-printed
)


@pytest.mark.parametrize(
    ("opening", "tags"),
    [(HERMES_OPENING, ("<tool_call>", "</tool_call>")), (BARE_CALL_OPENING, None), (None, None)],
)
def test_fenced_calls_are_read_as_they_are_written(opening: str | None, tags: tuple[str, str] | None) -> None:
    """A call in a ```json fence (in a family whose own calls are tagged or bare, or in one whose calls are not
    held) is read from the fence on as the reader reads it whole; the text before stays content."""
    start = FENCED.index("```")
    whole = read_calls(FENCED, FORMATS["hermes"], FUNCTIONS, final=True).calls
    assert [call.name for call in whole] == ["get_weather", "save"]
    opened_at = FENCED.index('"get_weather"') + len('"get_weather"')
    for chunks in _splits(FENCED, random.Random(7)):
        reading, names, arguments = _read_opened(FENCED, opening, tags, opened_at, chunks, fenced=True)
        assert reading.start == start and reading.finished
        assert names == [call.name for call in whole] and arguments == [call.arguments for call in whole]
    # cut short inside the first call's arguments: the call as far as written
    cut = FENCED[: FENCED.index('"Paris"') + 3]
    reading, names, arguments = _read_opened(cut, opening, tags, opened_at, [cut], fenced=True)
    assert not reading.finished and names == ["get_weather"] and arguments == ['{"city": "Pa']


@pytest.mark.parametrize("key", ["arguments", "parameters"])
def test_a_bare_call_in_a_family_of_tagged_calls_is_read_as_it_is_written(key: str) -> None:
    """A bare call that opens the answer (Qwen2.5-Coder writes them under Hermes tags; Llama 3's templates ask for
    `parameters`): read from its opening, the fence's and the tag's openings not in the way."""
    text = f'{{"name": "get_weather", "{key}": {{"city": "Paris", "days": 3}}}}'
    opened_at = text.index('"get_weather"') + len('"get_weather"')
    for chunks in _splits(text, random.Random(3)):
        reading, names, arguments = _read_opened(
            text, HERMES_OPENING, ("<tool_call>", "</tool_call>"), opened_at, chunks, fenced=True, bare=True
        )
        assert reading.start == 0 and reading.finished
        assert names == ["get_weather"] and arguments == ['{"city": "Paris", "days": 3}']


NAMED = (
    "Checking both.[TOOL_CALLS]get_weather[CALL_ID]a1b2c3d4e[ARGS]"
    '{"city": "Paris", "days": [1, 2], "note": "a [TOOL_CALLS] inside"}\n[TOOL_CALLS]save[ARGS]{"text": "x"}'
)


def test_named_calls_are_read_as_they_are_written() -> None:
    """Mistral's `[TOOL_CALLS]name[CALL_ID]id[ARGS]{…}`, one opening per call: each call's arguments in pieces that
    join to the calls read whole; the text before stays content; a call cut short is the call as far as written."""
    start = NAMED.index("[TOOL_CALLS]")
    whole = read_calls(NAMED, FORMATS["mistral"], FUNCTIONS, final=True).calls
    assert [call.name for call in whole] == ["get_weather", "save"]
    opening = re.escape("[TOOL_CALLS]")
    for chunks in _splits(NAMED, random.Random(5)):
        reading, names, arguments = _read_opened(
            NAMED, opening, ("[TOOL_CALLS]", None), start + 12, chunks, named=MISTRAL_CALLS
        )
        assert reading.start == start and reading.finished
        assert names == [call.name for call in whole] and arguments == [call.arguments for call in whole]
    cut = NAMED[: NAMED.index("Paris")]
    reading, names, arguments = _read_opened(
        cut, opening, ("[TOOL_CALLS]", None), start + 12, [cut], named=MISTRAL_CALLS
    )
    assert not reading.finished and names == ["get_weather"] and arguments == ['{"city": "']
    unnamed = NAMED[: NAMED.index("[ARGS]")]  # cut before its arguments: nothing was called
    reading, names, _ = _read_opened(
        unnamed, opening, ("[TOOL_CALLS]", None), start + 12, [unnamed], named=MISTRAL_CALLS
    )
    assert reading.came_to_nothing and not names
    between = NAMED[: NAMED.index("[TOOL_CALLS]save") + len("[TOOL_CALLS]sa")]  # cut before the second's arguments
    reading, names, _ = _read_opened(
        between, opening, ("[TOOL_CALLS]", None), start + 12, [between], named=MISTRAL_CALLS
    )
    assert names == ["get_weather"] and not reading.finished  # (a cut reply: its finish_reason stays `length`)


def _deepseek(text: str) -> str:
    """DeepSeek's tool tokens written as `<|tool call begin|>` (full-width bars, a lower block between words)."""
    return re.sub(r"<\|([a-z ]+)\|>", lambda m: "<\uff5c" + m.group(1).replace(" ", "\u2581") + "\uff5c>", text)


# Calls each named between tokens of the family's own, in one section (Kimi K2's; DeepSeek V3.1's and R1's)
SECTIONED = [
    (
        "kimi_k2",
        KIMI_K2_CALLS,
        "Checking both.<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        '<|tool_call_argument_begin|>{"city": "Paris", "days": [1, 2]}<|tool_call_end|>\n'
        '<|tool_call_begin|>functions.save:1<|tool_call_argument_begin|>{"text": "x"}<|tool_call_end|>'
        "<|tool_calls_section_end|>",
    ),
    (
        "deepseek",
        DEEPSEEK_CALLS,
        _deepseek(
            "Checking both.<|tool calls begin|><|tool call begin|>get_weather<|tool sep|>"
            '{"city": "Paris", "days": [1, 2]}<|tool call end|><|tool call begin|>save<|tool sep|>{"text": "x"}'
            "<|tool call end|><|tool calls end|>"
        ),
    ),
    (
        "deepseek",
        DEEPSEEK_R1_CALLS,
        _deepseek(
            "Checking both.<|tool calls begin|><|tool call begin|>function<|tool sep|>get_weather\n```json\n"
            '{"city": "Paris", "note": "```"}\n```<|tool call end|>\n<|tool call begin|>function<|tool sep|>save\n'
            '```json\n{"text": "x"}\n```<|tool call end|><|tool calls end|>'
        ),
    ),
]


@pytest.mark.parametrize(("family", "form", "text"), SECTIONED)
def test_named_calls_in_a_section_are_read_as_they_are_written(family: str, form: NamedCalls, text: str) -> None:
    """Each call after its own opening token in the section, its name between markers, its arguments JSON: the
    pieces join to the calls read whole, the section's closing ends them; cut short, a call is as far as written."""
    tags = _TAGGED[family]
    start = text.index(tags[0])
    whole = read_calls(text, FORMATS[family], FUNCTIONS, final=True).calls
    assert [call.name for call in whole] == ["get_weather", "save"]
    opening = re.escape(tags[0])
    for chunks in _splits(text, random.Random(7)):
        reading, names, arguments = _read_opened(text, opening, tags, start + len(tags[0]), chunks, named=form)
        assert reading.start == start and reading.finished
        assert names == [call.name for call in whole] and arguments == [call.arguments for call in whole]
        assert reading.answer_part(text, 0) == "Checking both."
    cut = text[: text.index("Paris")]
    reading, names, arguments = _read_opened(cut, opening, tags, start + len(tags[0]), [cut], named=form)
    assert not reading.finished and names == ["get_weather"] and arguments == ['{"city": "']
    between = text[: text.rindex("save") + 2]  # the first call closed, the second not yet named
    reading, names, _ = _read_opened(between, opening, tags, start + len(tags[0]), [between], named=form)
    assert names == ["get_weather"] and not reading.finished
    unclosed = text[: text.rindex(tags[1])]  # the calls whole, the section not closed
    reading, names, _ = _read_opened(unclosed, opening, tags, start + len(tags[0]), [unclosed], named=form)
    assert names == ["get_weather", "save"] and reading.finished


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "f", "arguments": {}}\n{"name": "save", "arguments": {"text": "x"}}',
        '{"name": "f", "arguments": {}}; [{"name": "save", "arguments": {"text": "x"}}]',
        '```json\n{"name": "f", "arguments": {}},\n{"name": "save", "arguments": {"text": "x"}}\n```',
    ],
)
def test_calls_listed_one_after_another_are_read_as_they_are_written(text: str) -> None:
    """Parallel calls as models list them (after blank space, a comma or a semicolon; bare or in a fence), as the
    reader reads them whole."""
    whole = read_calls(text, FORMATS["hermes"], FUNCTIONS, final=True).calls
    assert [call.name for call in whole] == ["f", "save"]
    opened_at = text.index('"f"') + 3
    for chunks in _splits(text, random.Random(9)):
        reading, names, arguments = _read_opened(
            text, HERMES_OPENING, ("<tool_call>", "</tool_call>"), opened_at, chunks, fenced=True, bare=True
        )
        assert reading.start == 0 and reading.finished
        assert names == ["f", "save"] and arguments == [call.arguments for call in whole]
    cut = text[: text.index("}") + 3]  # the first call, and what may begin a second
    reading, names, _ = _read_opened(cut, HERMES_OPENING, ("<tool_call>", "</tool_call>"), opened_at, [cut], bare=True)
    assert names == ["f"] and reading.finished == (cut.strip()[-1] not in ",;`")


def test_nothing_is_read_until_the_engine_says_a_call_opened() -> None:
    reading = OpenedCalls(HERMES_OPENING, ("<tool_call>", "</tool_call>"))
    text = 'A tag <tool_call>{"name": "f", "arguments": {}}</tool_call> written as text.'
    assert reading.feed(text, [SampledToken(1, text.encode())]) == []
    assert reading.start is None and reading.calls == []


XML_FUNCTIONS = {
    "get_weather": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "note": {"type": "string"}},
        },
    },
    "save": {
        "name": "save",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}, "meta": {"type": "object"}}},
    },
}
XML = (
    'I will look at both.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis "<b>" \\ tab\t</par\n'
    "</parameter>\n<parameter=days>\n3\n</parameter>\n<parameter=note>\n\n</parameter>\n</function>\n</tool_call>\n"
    "<tool_call>\n<function=save>\n<parameter=text>\n\nline one\n\nline </two> < caf\u00e9 \U0001f600\n\n</parameter>\n"
    '<parameter=meta>\n{"tags": ["a", "b"], "n": 1.50}\n</parameter>\n</function>\n</tool_call>'
)


# Seed-OSS's: its own tags, values on their parameter's line
SEED = (
    XML.replace("tool_call>", "seed:tool_call>")
    .replace(">\n3\n<", ">3<")
    .replace('>\n{"tags": ["a", "b"], "n": 1.50}\n<', '>{"tags": ["a", "b"], "n": 1.50}<')
)


@pytest.mark.parametrize(("family", "text"), [("hermes", XML), ("seed_oss", SEED)])
def test_xml_calls_are_read_as_they_are_written_in_any_family_that_writes_them(family: str, text: str) -> None:
    """Qwen3-Coder's XML calls (and Seed-OSS's): each call's arguments are the JSON object the reader makes of it, a
    string parameter's text sent as it is written (what may still be its closing held back), a JSON one once
    whole; the text before stays content."""
    opening = "<tool_call>" if family == "hermes" else "<seed:tool_call>"
    start = text.index(opening)
    whole = read_calls(text, FORMATS[family], XML_FUNCTIONS, final=True).calls
    assert [call.name for call in whole] == ["get_weather", "save"]
    assert json.loads(whole[0].arguments)["days"] == 3 and json.loads(whole[1].arguments)["meta"]["n"] == 1.5
    for chunks in _splits(text, random.Random(11)):
        reading, names, arguments = _read_opened(
            text,
            opening,
            (opening, "</" + opening[1:]),
            start + len(opening),
            chunks,
            xml=QWEN3_CODER_CALLS,
            functions=XML_FUNCTIONS,
        )
        assert reading.start == start and reading.finished
        assert names == [call.name for call in whole] and arguments == [call.arguments for call in whole]


def test_xml_calls_cut_short_are_read_as_far_as_they_were_written() -> None:
    """A string parameter's text goes out as it is written, not at the parameter's end (a line break that may end
    it waits); a call cut before its name is nothing; one cut in its closing tag is not finished."""
    hermes = ("<tool_call>", "</tool_call>")
    start = XML.index("<tool_call>")
    assert json.loads(read_calls(XML, FORMATS["hermes"], XML_FUNCTIONS, final=True).calls[1].arguments)["text"] == (
        "\nline one\n\nline </two> < caf\u00e9 \U0001f600\n"
    )
    cut = XML[: XML.index("Paris") + 3]
    reading, names, arguments = _read_opened(
        cut, HERMES_OPENING, hermes, start + 11, list(cut), xml=QWEN3_CODER_CALLS, functions=XML_FUNCTIONS
    )
    assert not reading.finished and names == ["get_weather"] and arguments == ['{"city": "Par']
    held = XML[: XML.index("line one") + 9]
    reading, names, arguments = _read_opened(
        held, HERMES_OPENING, hermes, start + 11, [held], xml=QWEN3_CODER_CALLS, functions=XML_FUNCTIONS
    )
    assert arguments[-1].endswith('"text": "\\nline one')
    unnamed = XML[: XML.index("<function=") + 12]  # cut before its name ends: nothing was called
    reading, names, _ = _read_opened(
        unnamed, HERMES_OPENING, hermes, start + 11, [unnamed], xml=QWEN3_CODER_CALLS, functions=XML_FUNCTIONS
    )
    assert reading.came_to_nothing and not names
    between = XML[: XML.index("</tool_call>") + 4]  # cut inside the first call's closing tag
    reading, names, _ = _read_opened(
        between, HERMES_OPENING, hermes, start + 11, [between], xml=QWEN3_CODER_CALLS, functions=XML_FUNCTIONS
    )
    assert names == ["get_weather"] and not reading.finished


GLM = (
    'Checking.<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value> Paris "<b>"\n</arg_value>\n'
    "<arg_key>days</arg_key><arg_value>3</arg_value>\n</tool_call>\n<tool_call>save<arg_key>text</arg_key>"
    '<arg_value>\nline </two>\n\n</arg_value><arg_key>meta</arg_key><arg_value>{"n": 1.50}</arg_value></tool_call>'
    "<tool_call>get_weather</tool_call>"
)
MINIMAX = (
    'Checking.\n<minimax:tool_call>\n<invoke name="get_weather">\n<parameter name="city"> Paris "<b>"\n'
    '</parameter>\n<parameter name="days">3</parameter>\n</invoke>\n<invoke name="save">\n'
    '<parameter name="text">\n  line </two>\n\n</parameter>\n<parameter name="meta"> {"n": 1.50} </parameter>\n'
    "</invoke>\n</minimax:tool_call>"
)

# DeepSeek V3.2's DSML: each parameter's opening marks its value text (`string="true"`) or JSON
DSML = (
    'Checking.\n\n<|DSML|function_calls>\n<|DSML|invoke name="get_weather">\n'
    '<|DSML|parameter name="city" string="true"> Paris "<b>"\n</|DSML|parameter>\n'
    '<|DSML|parameter name="days" string="false">3</|DSML|parameter>\n'
    '<|DSML|parameter name="note" string="false">null</|DSML|parameter>\n</|DSML|invoke>\n'
    '<|DSML|invoke name="save">\n<|DSML|parameter name="text" string="true">\n  line </two>\n\n</|DSML|parameter>\n'
    '<|DSML|parameter name="meta" string="false">{"n": 1.50}</|DSML|parameter>\n</|DSML|invoke>\n'
    "</|DSML|function_calls>"
).replace("|DSML|", "\uff5cDSML\uff5c")


@pytest.mark.parametrize(
    ("family", "form", "tags", "text"),
    [
        ("glm", GLM_CALLS, ("<tool_call>", "</tool_call>"), GLM),
        ("minimax_m2", MINIMAX_M2_CALLS, ("<minimax:tool_call>", "</minimax:tool_call>"), MINIMAX),
        ("dsml", DSML_CALLS, _TAGGED["dsml"], DSML),
    ],
)
def test_calls_in_a_familys_own_markup_are_read_as_they_are_written(
    family: str, form: XmlCalls, tags: tuple[str, str], text: str
) -> None:
    """GLM's `name<arg_key>…</arg_key><arg_value>…</arg_value>` (a value as written, the wrapping's closing ends the
    call), MiniMax-M2's `<invoke name=…>` (several in a wrapping, blank space at a value's ends left out) and DSML's
    (MiniMax-M2's with each value marked text or JSON, as written): each
    call's arguments join to the calls read whole, however the text arrives; a call cut short is the call as far
    as written."""
    start = text.index(tags[0])
    whole = read_calls(text, FORMATS[family], XML_FUNCTIONS, final=True).calls
    assert [call.name for call in whole] == ["get_weather", "save", "get_weather"][: len(whole)] and len(whole) >= 2
    assert json.loads(whole[0].arguments)["days"] == 3 and json.loads(whole[1].arguments)["meta"] == {"n": 1.5}
    for chunks in _splits(text, random.Random(13)):
        reading, names, arguments = _read_opened(
            text, re.escape(tags[0]), tags, start + len(tags[0]), chunks, xml=form, functions=XML_FUNCTIONS
        )
        assert reading.start == start and reading.finished
        assert names == [call.name for call in whole] and arguments == [call.arguments for call in whole]
    cut = text[: text.index("Paris") + 3]
    reading, names, arguments = _read_opened(
        cut, re.escape(tags[0]), tags, start + len(tags[0]), list(cut), xml=form, functions=XML_FUNCTIONS
    )
    assert not reading.finished and names == ["get_weather"]
    assert arguments == ['{"city": " Par' if form.trim == "raw" else '{"city": "Par']


def test_a_dsml_calls_free_parameters_are_read_as_their_openings_mark_them() -> None:
    """A function that declares no parameters: DSML's mark says text or JSON, and the stream reads each value as the
    reader does."""
    text = (
        '<|DSML|function_calls>\n<|DSML|invoke name="f">\n<|DSML|parameter name="n" string="false">3</|DSML|parameter>'
        '\n<|DSML|parameter name="s" string="true"> 3 </|DSML|parameter>\n<|DSML|parameter name="o" string="false">'
        '{"a": [1]}</|DSML|parameter>\n</|DSML|invoke>\n</|DSML|function_calls>'
    ).replace("|DSML|", "\uff5cDSML\uff5c")
    tags = _TAGGED["dsml"]
    (whole,) = read_calls(text, FORMATS["dsml"], FUNCTIONS, final=True).calls
    assert json.loads(whole.arguments) == {"n": 3, "s": " 3 ", "o": {"a": [1]}}
    for chunks in _splits(text, random.Random(17)):
        reading, names, arguments = _read_opened(
            text, re.escape(tags[0]), tags, len(tags[0]), chunks, xml=DSML_CALLS, functions=FUNCTIONS
        )
        assert reading.finished and names == ["f"] and arguments == [whole.arguments]


def test_a_glm_call_ends_with_the_reply_where_its_markup_has_no_closing_of_its_own() -> None:
    """GLM's call has no closing but the wrapping's: a reply cut after a whole parameter, or right after the name,
    leaves arguments that are JSON, not `finished` (the finish_reason stays the engine's); one cut inside a value
    stays cut."""
    tags = ("<tool_call>", "</tool_call>")
    for text, arguments in [
        ("<tool_call>get_weather\n<arg_key>city</arg_key><arg_value>Paris</arg_value>\n", '{"city": "Paris"}'),
        ("<tool_call>get_weather", "{}"),
        ("<tool_call>get_weather\n<arg_key>city</arg_key><arg_value>Par", '{"city": "Par'),
    ]:
        reading, names, sent = _read_opened(
            text, re.escape(tags[0]), tags, len(tags[0]), [text], xml=GLM_CALLS, functions=XML_FUNCTIONS
        )
        _gather(reading.close(), names, sent)
        assert names == ["get_weather"] and sent == [arguments] and not reading.finished
        assert [call.arguments for call in reading.calls] == [arguments]
        assert reading.close() == []  # once


@pytest.mark.parametrize(
    ("text", "start"),
    [
        (  # addressed in the channel's header, after thinking (the role's header with it)
            "<|channel|>analysis<|message|>Need the weather.<|end|><|start|>assistant<|channel|>commentary "
            'to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris", "days": [1, 2]}<|call|>',
            "<|start|>assistant<|channel|>",
        ),
        # addressed in the role's header, which the prompt wrote; the body's end not written (an end-of-generation
        # token ends it)
        (' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris", "n": "a\\"b"}', " to="),
        ('<|channel|>analysis to=functions.get_weather<|message|>{"city": "Paris"}', "<|channel|>"),
    ],
)
def test_a_harmony_call_is_read_as_it_is_written(text: str, start: str) -> None:
    """gpt-oss's call, a message addressed to a function: its header names the call, its body's JSON arguments
    stream in pieces that join to the call read whole; the thinking before the header is the reply's; a call cut
    short is the call as far as it was written."""
    (whole,) = read_harmony(text, FUNCTIONS, final=True).calls
    at = text.index(start)
    opened_at = text.index("to=functions.") + len("to=functions.get")
    for chunks in _splits(text, random.Random(19)):
        reading, names, arguments = _read_opened(text, HARMONY_CALL_OPENING, None, opened_at, chunks, harmony=True)
        assert reading.start == at and reading.finished
        assert names == ["get_weather"] and arguments == [whole.arguments]
        assert reading.answer_part(text, 0) == text[:at]
    before = read_harmony(text[:at], FUNCTIONS, final=True)  # the thinking before the call, and no answer
    assert not before.calls and not before.content and before.reasoning == ("Need the weather." if at else "")
    cut = text[: text.index("Paris")]
    reading, names, arguments = _read_opened(cut, HARMONY_CALL_OPENING, None, opened_at, list(cut), harmony=True)
    assert not reading.finished and names == ["get_weather"] and arguments == ['{"city": "']
    header = text[: text.rindex("<|message|>")]  # not yet named whole: nothing read, nothing sent
    reading, names, _ = _read_opened(header, HARMONY_CALL_OPENING, None, opened_at, [header], harmony=True)
    assert reading.start == at and names == [] and reading.came_to_nothing


@pytest.mark.parametrize(
    "text",
    [
        'Checking.<|tool_call>call:get_weather{city:<|"|>São "Paulo"\n <|<|"|>,days:[1,2.50,-3e2],meta:{n:null,'
        'ok:true,x:{}},tags:[]}<tool_call|><|tool_call>call:save{text:<|"|>a, b} c]<|"|>}<tool_call|>',
        "<|tool_call>call:f{}<tool_call|>",
    ],
)
def test_gemma_4s_calls_are_read_as_they_are_written(text: str) -> None:
    """Gemma 4's `call:name{key:value,…}`, in its own syntax: each call's arguments stream as the JSON the reader
    makes of them whole, however the text arrives (a string's text piece by piece, as written); a call cut short
    is the call as far as it was written."""
    tags = ("<|tool_call>", "<tool_call|>")
    whole = read_calls(text, FORMATS["gemma4"], FUNCTIONS, final=True).calls
    start = text.index(tags[0])
    for chunks in _splits(text, random.Random(23)):
        reading, names, arguments = _read_opened(
            text, re.escape(tags[0]), tags, start + len(tags[0]), chunks, gemma4=True
        )
        assert reading.start == start and reading.finished
        assert names == [call.name for call in whole] and arguments == [call.arguments for call in whole]
        assert reading.answer_part(text, 0) == text[:start]
    if "Paulo" in text:
        cut = text[: text.index("Paulo") + 2]
        reading, names, arguments = _read_opened(
            cut, re.escape(tags[0]), tags, start + len(tags[0]), list(cut), gemma4=True
        )
        assert not reading.finished and names == ["get_weather"] and arguments == ['{"city": "S\u00e3o \\"Pa']


@pytest.mark.parametrize(
    ("tags", "text"),
    [
        (
            ("<|START_ACTION|>", "<|END_ACTION|>"),
            'Checking.<|START_ACTION|>[\n    {"tool_call_id": "0", "tool_name": "get_weather", "parameters": '
            '{"city": "Paris", "id": "x", "days": [1, 2]}},\n    {"tool_call_id": "1", "tool_name": "save", '
            '"parameters": {"text": "x"}}\n]<|END_ACTION|>',
        ),
        (
            ("[TOOL_CALLS]", None),
            '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2]}, "id": "a1B2c3D4e"}, '
            '{"name": "save", "arguments": {"text": "x"}, "id": "f5G6h7I8j"}]',
        ),
    ],
)
def test_calls_that_carry_ids_of_their_familys_own_are_read_as_they_are_written(
    tags: tuple[str, str | None], text: str
) -> None:
    """Command R's calls (an id first, the name `tool_name`, the arguments `parameters`) and Mistral Nemo's (an id
    after the arguments): each call's arguments stream as the reader reads them whole; the family's ids are read
    past, not sent (an argument of the same name is an argument)."""
    family = "command_r" if tags[0] == "<|START_ACTION|>" else "mistral"
    whole = read_calls(text, FORMATS[family], FUNCTIONS, final=True).calls
    assert [call.name for call in whole] == ["get_weather", "save"]
    assert "id" in json.loads(whole[0].arguments) or family == "mistral"
    start = text.index(tags[0])
    for chunks in _splits(text, random.Random(29)):
        reading, names, arguments = _read_opened(text, re.escape(tags[0]), tags, start + len(tags[0]), chunks)
        assert reading.start == start and reading.finished
        assert names == [call.name for call in whole] and arguments == [call.arguments for call in whole]


@pytest.mark.parametrize(
    "text",
    [
        'Sure.<|tool_call_start|>[get_weather(city="Paris, \\"FR\\"", days=[1, 2.50]), save(text="a,)] b", '
        'meta={"n": None, "ok": true, "x": {}}, flag=False)]<|tool_call_end|>',
        "<|tool_call_start|>[f()]<|tool_call_end|>",
        '<|tool_call_start|>[f(\n  a=1,\n  b="x"\n)]',  # blank space where Python reads it; no closing tag yet
    ],
)
def test_pythonic_calls_are_read_as_they_are_written(text: str) -> None:
    """LFM2's `[name(key=value, …), …]`: each call opens at its name, each value is sent once whole as the JSON the
    reader (Python's `ast`) makes of it, however the text arrives; a call cut short is the call as far as written."""
    tags = ("<|tool_call_start|>", "<|tool_call_end|>")
    whole = read_calls(text, FORMATS["pythonic"], FUNCTIONS, final=True).calls
    assert whole
    start = text.index(tags[0])
    for chunks in _splits(text, random.Random(31)):
        reading, names, arguments = _read_opened(
            text, re.escape(tags[0]), tags, start + len(tags[0]), chunks, pythonic=True
        )
        assert reading.start == start and reading.finished
        assert names == [call.name for call in whole] and arguments == [call.arguments for call in whole]
    if "Paris" in text:
        cut = text[: text.index("Paris")]
        reading, names, arguments = _read_opened(
            cut, re.escape(tags[0]), tags, start + len(tags[0]), [cut], pythonic=True
        )
        assert not reading.finished and names == ["get_weather"] and arguments == ['{"city": ']


def test_calls_keyed_by_their_names_are_read_as_they_are_written() -> None:
    """Apertus's `[{"name": {arguments}}, …]`: each call's key names it, its value streams as its arguments."""
    tags = ("<|tools_prefix|>", "<|tools_suffix|>")
    text = (
        'Checking. <|tools_prefix|>[{"get_weather": {"city": "Paris", "days": [1, 2]}}, {"save": {"text": "x"}}]'
        "<|tools_suffix|>"
    )
    whole = read_calls(text, FORMATS["apertus"], FUNCTIONS, final=True).calls
    assert [call.name for call in whole] == ["get_weather", "save"]
    start = text.index(tags[0])
    for chunks in _splits(text, random.Random(37)):
        reading, names, arguments = _read_opened(
            text, re.escape(tags[0]), tags, start + len(tags[0]), chunks, keyed_by_name=True
        )
        assert reading.start == start and reading.finished
        assert names == [call.name for call in whole] and arguments == [call.arguments for call in whole]
