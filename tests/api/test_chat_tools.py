"""Function calling through the official SDK: forced calls are valid JSON even from a 135M model."""

from __future__ import annotations

import json
import re
from typing import Any

import openai
import pytest
from lark import Lark

from oasis.engines.lark_grammar import LARK_SCHEMA_KEY
from oasis.services.chat.tool_formats import FORMATS, read_calls
from tests.conftest import Harness
from tests.test_lark_grammar import GRAMMARS as LARK_GRAMMARS

MODEL = "gpt-4o-mini"
WEATHER = [{"role": "user", "content": "What's the weather in Paris?"}]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "The current time in a time zone",
            "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
        },
    },
]


async def test_required_tool_call_parses_and_names_an_offered_function(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL, messages=WEATHER, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=100
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        arguments = json.loads(call.function.arguments)
        if call.function.name == "get_weather":
            assert isinstance(arguments["city"], str) and arguments["unit"] in ("c", "f")
        else:
            assert call.function.name == "get_time" and isinstance(arguments["zone"], str)


async def test_a_named_function_is_the_one_called(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=WEATHER,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        temperature=0,
        max_tokens=100,
    )
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "get_time" and "zone" in json.loads(call.function.arguments)


async def test_allowed_tools_limit_the_calls_to_those_named(chat_oasis: Harness) -> None:
    """`tool_choice: allowed_tools` (current SDKs): of the offered tools, only those named may be called; with
    `required`, one of them is, though the question asks for another."""
    allowed = {"mode": "required", "tools": [{"type": "function", "function": {"name": "get_time"}}]}
    body = {
        "model": MODEL,
        "messages": WEATHER,
        "tools": TOOLS,
        "tool_choice": {"type": "allowed_tools", "allowed_tools": allowed},
        "temperature": 0,
        "max_tokens": 100,
    }
    async with chat_oasis.http() as http:
        reply = await http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    (choice,) = reply.json()["choices"]
    assert choice["finish_reason"] == "tool_calls", choice
    assert {call["function"]["name"] for call in choice["message"]["tool_calls"]} == {"get_time"}


async def test_an_earlier_refusal_in_the_conversation_is_read_as_what_was_said(chat_oasis: Harness) -> None:
    """Current SDKs send an earlier answer's `refusal` part back with the conversation."""
    history: Any = [
        {"role": "user", "content": "Tell me a secret."},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't share secrets."}]},
        {"role": "user", "content": "Then say hello."},
    ]
    reply = await chat_oasis.sdk().chat.completions.create(model=MODEL, messages=history, max_tokens=5)
    assert reply.choices[0].message.content is not None


async def test_tool_calls_stream_as_deltas(chat_oasis: Harness) -> None:
    """A forced call's arguments come in pieces as the model writes them (as OpenAI streams them, and as instructor's
    partial objects need), joining to the arguments of the same answer asked whole."""
    asked: dict[str, Any] = {
        "model": MODEL,
        "messages": WEATHER,
        "tools": TOOLS,
        "tool_choice": "required",
        "extra_body": {"parallel_tool_calls": False},  # a keyword only in newer SDKs
        "temperature": 0,
        "max_tokens": 100,
    }
    stream = await chat_oasis.sdk().chat.completions.create(**asked, stream=True)
    chunks = [chunk async for chunk in stream]
    calls = [
        call for c in chunks if c.choices and c.choices[0].delta.tool_calls for call in c.choices[0].delta.tool_calls
    ]
    assert calls[0].id and calls[0].function and calls[0].function.name in ("get_weather", "get_time")
    assert calls[0].function.arguments == "" and not any(call.id for call in calls[1:])
    arguments = "".join(call.function.arguments or "" for call in calls if call.function)
    assert isinstance(json.loads(arguments), dict)
    assert {call.index for call in calls} == {0}
    assert len([call for call in calls[1:] if call.function and call.function.arguments]) > 2  # not whole at the end
    whole = await chat_oasis.sdk().chat.completions.create(**asked)
    (called,) = whole.choices[0].message.tool_calls or []
    assert called.function.name == calls[0].function.name and called.function.arguments == arguments  # type: ignore[union-attr]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert not any(c.choices[0].delta.content for c in chunks if c.choices)


@pytest.mark.parametrize(("cut_by", "finish"), [({"max_tokens": 17}, "length"), ({"stop": ["city"]}, "stop")])
async def test_a_forced_call_cut_short_is_the_call_as_far_as_it_was_written(
    chat_oasis: Harness, cut_by: dict[str, Any], finish: str
) -> None:
    """Cut inside its arguments (by max_tokens, by a stop string), a forced call is answered as OpenAI answers it,
    whole and streamed alike: the call with its arguments unfinished, the finish_reason that cut it, no content."""
    client = chat_oasis.sdk()
    asked: dict[str, Any] = {
        "model": MODEL,
        "messages": WEATHER,
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "temperature": 0,
    }
    full = (await client.chat.completions.create(**asked, max_tokens=100)).choices[0].message.tool_calls or []
    asked = {"max_tokens": 100, **asked, **cut_by}
    whole = (await client.chat.completions.create(**asked)).choices[0]
    assert whole.finish_reason == finish and whole.message.content is None
    (cut,) = whole.message.tool_calls or []
    assert cut.function.name == "get_weather"  # type: ignore[union-attr]
    assert cut.function.arguments and full[0].function.arguments.startswith(cut.function.arguments)  # type: ignore[union-attr]
    assert cut.function.arguments != full[0].function.arguments  # type: ignore[union-attr]
    stream = await client.chat.completions.create(**asked, stream=True)
    chunks = [chunk async for chunk in stream]
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert "".join(call.function.arguments or "" for call in calls if call.function) == cut.function.arguments  # type: ignore[union-attr]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [finish]
    assert not any(c.choices[0].delta.content for c in chunks if c.choices)


async def test_deprecated_functions_answer_with_function_call(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=WEATHER,
        functions=[tool["function"] for tool in TOOLS],
        function_call={"name": "get_weather"},
        temperature=0,
        max_tokens=100,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.function_call
    assert choice.message.function_call.name == "get_weather"
    assert "city" in json.loads(choice.message.function_call.arguments)


async def test_tool_choice_none_answers_in_text(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL, messages=WEATHER, tools=TOOLS, tool_choice="none", max_tokens=10
    )
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls


async def test_a_conversation_with_tool_results_continues(chat_oasis: Harness) -> None:
    history: list[Any] = [
        *WEATHER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21, "sky": "clear"}'},
    ]
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS, tool_choice="none", max_tokens=20
    )
    assert reply.choices[0].message.content


async def test_a_call_with_broken_json_arguments_in_history_is_passed_on(chat_oasis: Harness) -> None:
    # Models emit arguments that do not parse, and clients send the call back as it came.
    history: list[Any] = [
        *WEATHER,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Par'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "error: bad arguments"},
    ]
    reply = await chat_oasis.sdk().chat.completions.create(model=MODEL, messages=history, max_tokens=5)
    assert reply.choices[0].message.content is not None


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "launch_rocket"}}}, "tool_choice"),
        ({"tools": [], "tool_choice": "required"}, "tool_choice"),
        (
            {
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "nope"}}]},
                }
            },
            "tool_choice.allowed_tools.tools[0]",
        ),
    ],
)
async def test_bad_tool_requests_are_400s(chat_oasis: Harness, change: dict[str, Any], param: str) -> None:
    async with chat_oasis.http() as http:
        body = {"model": MODEL, "messages": WEATHER, "tools": TOOLS, **change}
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


OFFERED = {tool["function"]["name"]: tool["function"] for tool in TOOLS}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('{"name": "get_time", "arguments": {"zone": "UTC"}}', ["get_time"]),
        (
            '[{"name": "get_time", "arguments": {}}, {"name": "get_weather", "arguments": {}}]',
            ["get_time", "get_weather"],
        ),
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>', ["get_weather"]),
        ("The weather is nice.", None),
        ('{"name": "not_offered", "arguments": {}}', None),
        ('{"weather": "sunny"}', None),
    ],
)
def test_auto_replies_become_calls_only_when_they_are_calls(text: str, names: list[str] | None) -> None:
    calls = read_calls(text, FORMATS["json"], OFFERED, final=True).calls
    assert ([call.name for call in calls] or None) == names


async def test_parallel_false_means_one_call(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Paris and in Rome, please."}],
        tools=TOOLS,
        tool_choice="required",
        extra_body={"parallel_tool_calls": False},  # a keyword only in newer SDKs
        temperature=0,
        max_tokens=100,
    )
    assert len(reply.choices[0].message.tool_calls or []) == 1
    with pytest.raises(openai.BadRequestError):
        await chat_oasis.sdk().chat.completions.create(
            model=MODEL, messages=WEATHER, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "x"}}
        )


# Custom tools (after the 2.0.0 spec): called with free text, or text in a grammar, not JSON arguments.
DATE_TOOL: Any = {
    "type": "custom",
    "custom": {
        "name": "book_day",
        "description": "Book the given day",
        "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": r"^\d{4}-\d{2}-\d{2}$"}},
    },
}


def _custom(call: Any) -> dict[str, Any]:
    """A custom call's name and input (as a dict: SDKs before custom tools keep the field unparsed)."""
    custom: dict[str, Any] = call.model_dump()["custom"]
    return custom


def _regex(definition: str) -> Any:
    return {"type": "grammar", "grammar": {"syntax": "regex", "definition": definition}}


def _lark(definition: str) -> Any:
    return {"type": "grammar", "grammar": {"syntax": "lark", "definition": definition}}


# Sums as lark grammars write them: left recursion, and spaces ignored between the tokens.
SUM_GRAMMAR = """
start: sum
sum: sum "+" NUMBER | NUMBER
%import common.NUMBER
%import common.WS_INLINE
%ignore WS_INLINE
"""


NOTE_TOOL: Any = {"type": "custom", "custom": {"name": "write_note", "description": "Write a note in plain text"}}
BOOKING = [{"role": "user", "content": "Book me a table for the first of May 2025."}]


async def test_a_custom_tool_is_called_with_text_in_its_grammar(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=BOOKING,
        tools=[DATE_TOOL, NOTE_TOOL, *TOOLS],
        tool_choice={"type": "custom", "custom": {"name": "book_day"}},
        temperature=0,
        max_tokens=40,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "custom" and call.id.startswith("call_")
    custom = _custom(call)
    assert custom["name"] == "book_day" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", custom["input"]), call

    # a grammar that ends in an escaped dollar sign (the definition's own anchors and escapes are kept)
    priced = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Price a coffee."}],
        tools=[{"type": "custom", "custom": {"name": "price", "format": _regex(r"^\d{1,3}\$")}}],
        tool_choice="required",
        temperature=0,
        max_tokens=40,
    )
    (price,) = priced.choices[0].message.tool_calls or []
    assert price.type == "custom" and re.fullmatch(r"\d{1,3}\$", _custom(price)["input"]), price

    # free text: any string is the input
    noted = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Note that the milk is out."}],
        tools=[NOTE_TOOL],
        tool_choice="required",
        temperature=0,
        max_tokens=30,
    )
    (note,) = noted.choices[0].message.tool_calls or []
    assert note.type == "custom" and _custom(note)["name"] == "write_note" and isinstance(_custom(note)["input"], str)


async def test_a_custom_tool_with_a_lark_grammar_is_called_with_text_the_grammar_matches(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    calculator = {
        "type": "custom",
        "custom": {"name": "add", "description": "Add numbers", "format": _lark(SUM_GRAMMAR)},
    }
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 12 plus 30 plus 7? Use the calculator."}],
        tools=[calculator, NOTE_TOOL],
        tool_choice={"type": "custom", "custom": {"name": "add"}},
        temperature=0,
        max_tokens=60,
    )
    choice = reply.choices[0]
    (call,) = choice.message.tool_calls or []
    assert choice.finish_reason == "tool_calls" and call.type == "custom", choice
    text = _custom(call)["input"]
    Lark(SUM_GRAMMAR).parse(text)  # raises when the input is not in the grammar
    assert "+" in text, text
    engine: Any = chat_oasis.container.registry.engine(MODEL)
    for definition, _matching, _other in LARK_GRAMMARS:  # every grammar the converter's own tests cover
        engine.check_schema({"type": "string", LARK_SCHEMA_KEY: definition})  # llama.cpp parses its GBNF


async def test_a_custom_call_streams_and_its_result_continues_the_conversation(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    asked = {"model": MODEL, "tools": [DATE_TOOL], "tool_choice": "required", "temperature": 0, "max_tokens": 40}
    whole = await client.chat.completions.create(messages=BOOKING, **asked)
    (call,) = whole.choices[0].message.tool_calls or []
    async with chat_oasis.http() as http:
        streamed = await http.post("/v1/chat/completions", json={"messages": BOOKING, "stream": True, **asked})
    chunks = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    deltas = [part for chunk in chunks for part in chunk["choices"][0]["delta"].get("tool_calls") or []]
    assert deltas[0]["type"] == "custom" and deltas[0]["id"] and deltas[0]["custom"]["name"] == "book_day"
    assert "".join(delta["custom"]["input"] for delta in deltas) == _custom(call)["input"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    # the call and its result sent back, as a client does: the model answers on
    history: list[Any] = [
        *BOOKING,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "Booked."},
    ]
    # (drawn at the default temperature: a seed keeps the draw the same from run to run)
    after = await client.chat.completions.create(
        model=MODEL, messages=history, tools=[DATE_TOOL], max_tokens=16, seed=7
    )
    assert after.choices[0].message.content


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"tool_choice": {"type": "custom", "custom": {"name": "get_weather"}}}, "tool_choice.custom.name"),
        ({"tool_choice": {"type": "custom", "custom": {"name": "nope"}}}, "tool_choice.custom.name"),
        # a custom tool is forced as one, not as a function
        (
            {"tools": [DATE_TOOL, *TOOLS], "tool_choice": {"type": "function", "function": {"name": "book_day"}}},
            "tool_choice",
        ),
        ({"tools": [DATE_TOOL, {**DATE_TOOL, "custom": {"name": "book_day"}}]}, "tools"),  # two tools, one name
        (
            {
                "tools": [
                    {
                        "type": "custom",
                        "custom": {
                            "name": "parse",
                            # WORD is never defined (`%import common.WORD` would)
                            "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": "start: WORD"}},
                        },
                    }
                ]
            },
            "tools[0].custom.format.grammar.definition",
        ),
        (  # lark reads no grammar files but its own `common`
            {"tools": [{"type": "custom", "custom": {"name": "parse", "format": _lark("start: x\n%import os.x")}}]},
            "tools[0].custom.format.grammar.definition",
        ),
        (  # a lark grammar, but left recursion behind a rule that may be empty has no GBNF form
            {
                "tools": [
                    DATE_TOOL,
                    {
                        "type": "custom",
                        "custom": {"name": "parse", "format": _lark('start: y start "a" | "b"\ny: "c" |')},
                    },
                ]
            },
            "tools[1].custom.format.grammar.definition",
        ),
        (
            {
                "tools": [
                    {
                        "type": "custom",
                        "custom": {
                            "name": "parse",
                            "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": "(unclosed"}},
                        },
                    }
                ]
            },
            "tools[0].custom.format.grammar.definition",
        ),
        (  # a lookahead is a regex, but has no grammar form
            {
                "tools": [
                    {
                        "type": "custom",
                        "custom": {
                            "name": "parse",
                            "format": {"type": "grammar", "grammar": {"syntax": "regex", "definition": "(?=a)\\w+"}},
                        },
                    }
                ]
            },
            "tools[0].custom.format.grammar.definition",
        ),
        (
            {
                "tools": [DATE_TOOL, *TOOLS],
                "tool_choice": {
                    "type": "allowed_tools",
                    "allowed_tools": {
                        "mode": "required",
                        "tools": [{"type": "function", "function": {"name": "book_day"}}],
                    },
                },
            },
            "tool_choice.allowed_tools.tools[0]",
        ),
    ],
)
async def test_bad_custom_tool_requests_are_400s(chat_oasis: Harness, change: dict[str, Any], param: str) -> None:
    async with chat_oasis.http() as http:
        body = {"model": MODEL, "messages": BOOKING, "tools": TOOLS, **change}
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


async def test_allowed_tools_may_name_a_custom_tool(chat_oasis: Harness) -> None:
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=BOOKING,
        tools=[DATE_TOOL, *TOOLS],
        tool_choice={
            "type": "allowed_tools",
            "allowed_tools": {"mode": "required", "tools": [{"type": "custom", "custom": {"name": "book_day"}}]},
        },
        temperature=0,
        max_tokens=40,
    )
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.type == "custom" and _custom(call)["name"] == "book_day"


def _called(city: str, number: int) -> dict[str, Any]:
    arguments = json.dumps({"city": city, "unit": "c"})
    call = {"id": f"call_{number}", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


# A conversation where the model has called the function twice before: SmolLM2 calls it again, unforced.
CALLED_BEFORE: list[Any] = [
    {"role": "user", "content": "What's the weather in Rome?"},
    _called("Rome", 1),
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24 C"},
    {"role": "user", "content": "And in Oslo?"},
    _called("Oslo", 2),
    {"role": "tool", "tool_call_id": "call_2", "content": "snow, -3 C"},
    {"role": "user", "content": "And in Paris?"},
]


def _streamed_calls(chunks: list[Any]) -> list[Any]:
    return [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]


async def test_an_unforced_calls_arguments_stream_as_the_model_writes_them(chat_oasis: Harness) -> None:
    """Under `tool_choice` auto, a call the model opens is held to its function's schema from there (llama.cpp's
    lazy grammar, as llama-server does it), so its arguments stream in pieces as OpenAI's do, joining to the
    arguments of the same answer asked whole."""
    client = chat_oasis.sdk()
    asked: dict[str, Any] = {"model": MODEL, "messages": CALLED_BEFORE, "tools": TOOLS[:1], "temperature": 0}
    whole = await client.chat.completions.create(**asked, max_tokens=60)
    assert whole.choices[0].finish_reason == "tool_calls" and whole.choices[0].message.content is None
    (called,) = whole.choices[0].message.tool_calls or []
    assert called.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(called.function.arguments)["city"] == "Paris"  # type: ignore[union-attr]
    chunks = [chunk async for chunk in await client.chat.completions.create(**asked, max_tokens=60, stream=True)]
    calls = _streamed_calls(chunks)
    assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    assert calls[0].function.arguments == "" and not any(call.id for call in calls[1:])
    assert "".join(call.function.arguments or "" for call in calls if call.function) == called.function.arguments  # type: ignore[union-attr]
    assert len([call for call in calls[1:] if call.function and call.function.arguments]) > 2  # not whole at the end
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert not any(c.choices[0].delta.content for c in chunks if c.choices)

    # Cut short inside its arguments, the call is the call as far as it was written, whole and streamed alike
    cut = await client.chat.completions.create(**asked, max_tokens=16)
    assert cut.choices[0].finish_reason == "length" and cut.choices[0].message.content is None
    (cut_call,) = cut.choices[0].message.tool_calls or []
    assert cut_call.function.name == "get_weather"  # type: ignore[union-attr]
    assert called.function.arguments.startswith(cut_call.function.arguments)  # type: ignore[union-attr]
    assert cut_call.function.arguments != called.function.arguments  # type: ignore[union-attr]
    chunks = [chunk async for chunk in await client.chat.completions.create(**asked, max_tokens=16, stream=True)]
    joined = "".join(call.function.arguments or "" for call in _streamed_calls(chunks) if call.function)
    assert joined == cut_call.function.arguments  # type: ignore[union-attr]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]

    # Cut before the call was named, nothing was called: the reply is the text it wrote, whole and streamed alike
    unnamed = (await client.chat.completions.create(**asked, max_tokens=5)).choices[0]
    assert unnamed.finish_reason == "length" and not unnamed.message.tool_calls
    assert (unnamed.message.content or "").startswith('[{"name":')
    chunks = [chunk async for chunk in await client.chat.completions.create(**asked, max_tokens=5, stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == unnamed.message.content
    assert not _streamed_calls(chunks)


def _fenced(city: str) -> dict[str, Any]:
    call = {"name": "get_weather", "arguments": {"city": city, "unit": "c"}}
    return {"role": "assistant", "content": f"```json\n{json.dumps(call)}\n```"}


# Earlier turns where calls were written in ```json fences (as many small models write them, whatever their
# template teaches) and left in the history as text
FENCED_BEFORE: list[Any] = [
    {"role": "user", "content": "What's the weather in Rome?"},
    _fenced("Rome"),
    {"role": "user", "content": "sunny, 24 C. And in Oslo?"},
    _fenced("Oslo"),
    {"role": "user", "content": "snow, -3 C. And in Paris?"},
]


async def test_a_fenced_calls_arguments_stream_as_the_model_writes_them(chat_oasis: Harness) -> None:
    """A call the model writes in a ```json fence is held to its function's schema once it names the function,
    and streams as written: no fence in the content, the arguments in pieces joining to the whole answer's."""
    client = chat_oasis.sdk()
    asked: dict[str, Any] = {"model": MODEL, "messages": FENCED_BEFORE, "tools": TOOLS[:1], "temperature": 0}
    whole = (await client.chat.completions.create(**asked, max_tokens=60)).choices[0]
    assert whole.finish_reason == "tool_calls" and not whole.message.content
    (called,) = whole.message.tool_calls or []
    assert called.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(called.function.arguments)["city"] == "Paris"  # type: ignore[union-attr]
    chunks = [chunk async for chunk in await client.chat.completions.create(**asked, max_tokens=60, stream=True)]
    calls = _streamed_calls(chunks)
    assert calls[0].id and calls[0].function and calls[0].function.name == "get_weather"
    assert "".join(call.function.arguments or "" for call in calls if call.function) == called.function.arguments  # type: ignore[union-attr]
    assert len([call for call in calls[1:] if call.function and call.function.arguments]) > 2  # not whole at the end
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert not "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()


async def test_a_forced_call_to_a_function_whose_parameters_have_definitions_is_written_to_them(
    chat_oasis: Harness,
) -> None:
    """Parameters made from nested pydantic models (`$defs` and `$ref`s, as instructor, LangChain and the Agents
    SDK send them) hold the forced call: the arguments validate against the model (they were a 400 before)."""
    from pydantic import BaseModel

    class Address(BaseModel):
        city: str
        country: str

    class Person(BaseModel):
        name: str
        home: Address
        friends: list[Person] = []

    parameters = Person.model_json_schema()
    assert "$defs" in parameters
    tool: Any = {"type": "function", "function": {"name": "save_person", "parameters": parameters}}
    reply = await chat_oasis.sdk().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Save Ada, who lives in London, England."}],
        tools=[tool],
        tool_choice="required",
        temperature=0,
        max_tokens=120,
    )
    (call,) = reply.choices[0].message.tool_calls or []
    assert call.function.name == "save_person"  # type: ignore[union-attr]
    Person.model_validate_json(call.function.arguments)  # type: ignore[union-attr]
