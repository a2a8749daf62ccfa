"""The Responses API (after the 2.0.0 spec) through newer SDKs' `client.responses` (create, stream, parse,
retrieve, delete, input_items) and as plain requests, which the May-2024 SDK would send. On the real llama.cpp
engine and the shipped SmolLM2 model."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest
from pydantic import BaseModel
from sqlalchemy import select

from oasis.storage.tables import StoredResponse
from tests.conftest import Harness, smollm
from tests.scripted_upstream import ScriptedChat, upstream_oasis

MODEL = "gpt-4o-mini"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _newer_sdk(client: openai.AsyncOpenAI) -> None:
    if not hasattr(client, "responses"):
        pytest.skip("this SDK has no Responses API")


def hosted_tool_agent(client: openai.AsyncOpenAI, kind: str, **settings: Any) -> tuple[Any, Any]:
    """OpenAI's Agents SDK (skipped where it is not installed), its tracing off (it posts to OpenAI), and an agent
    on the model `remote` of `client`'s server whose one tool is the SDK's hosted tool `kind`, with `settings`."""
    agents = pytest.importorskip("agents")
    _newer_sdk(client)
    agents.set_tracing_disabled(True)
    model = agents.OpenAIResponsesModel(model="remote", openai_client=client)
    tool = getattr(agents, kind)(**settings)
    return agents, agents.Agent(name="Helper", instructions="Use the tool.", model=model, tools=[tool])


def _plain(value: Any) -> Any:
    """An event's field as JSON: openai 3 parses annotations into models where 2.x left them dicts."""
    return value.model_dump() if hasattr(value, "model_dump") else value


async def _post(harness: Harness, **body: Any) -> Any:
    async with harness.http() as http:
        return await http.post("/v1/responses", json={"model": MODEL, **body})


async def test_a_text_input_is_answered_stored_and_listed(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    response = await client.responses.create(
        model=MODEL,
        input="Name a colour.",
        instructions="You answer in one word.",
        max_output_tokens=24,
        temperature=0.5,
        metadata={"case": "colour"},
    )
    assert response.id.startswith("resp_") and response.object == "response" and response.model == MODEL
    assert response.status in ("completed", "incomplete") and response.output_text
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and message.content[0].text == response.output_text
    usage = response.usage
    assert usage is not None and usage.input_tokens > 10 and 1 <= usage.output_tokens <= 24
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert response.instructions == "You answer in one word." and response.temperature == 0.5
    assert response.metadata == {"case": "colour"} and response.store is True

    again = await client.responses.retrieve(response.id)
    assert again.output_text == response.output_text and again.usage == response.usage

    items = await client.responses.input_items.list(response.id)
    (item,) = items.data
    assert item.type == "message" and item.role == "user"  # type: ignore[union-attr]
    assert item.content[0].type == "input_text" and item.content[0].text == "Name a colour."  # type: ignore[union-attr]


async def test_a_response_continues_an_earlier_one_until_that_is_deleted(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    first = await client.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=20)
    second = await client.responses.create(
        model=MODEL, input="What is my name?", previous_response_id=first.id, max_output_tokens=20
    )
    alone = await client.responses.create(model=MODEL, input="What is my name?", max_output_tokens=20)
    assert second.previous_response_id == first.id
    assert first.usage and second.usage and alone.usage
    # the earlier input ("My name is Ada.", 5 tokens) and answer were read again: the later prompt holds them
    carried = second.usage.input_tokens - alone.usage.input_tokens
    assert carried >= first.usage.output_tokens + 5
    items = await client.responses.input_items.list(second.id)
    assert [item.content[0].text for item in items.data] == ["What is my name?"]  # type: ignore[union-attr]

    await client.responses.delete(first.id)  # the SDK answers None
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as gone:
        await client.responses.create(model=MODEL, input="And now?", previous_response_id=first.id)
    assert gone.value.body["param"] == "previous_response_id"  # type: ignore[index]


async def test_a_streamed_response_is_heard_as_typed_events(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    # A stream cut by max_output_tokens ends with `response.incomplete`, as OpenAI's does (the SDK's
    # `responses.stream` helper waits for `response.completed` only): read as plain events.
    stream = await client.responses.create(
        model=MODEL, input="Tell me about the sea.", max_output_tokens=20, stream=True
    )
    events = [event async for event in stream]
    final = events[-1].response  # type: ignore[union-attr]
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete" if final.status == "incomplete" else "response.completed",
    ]
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(events)))
    said = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert said and final.output_text == said
    (done,) = [event for event in events if event.type == "response.output_item.done"]
    assert done.item == final.output[0]  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.output_tokens >= 1
    stored = await client.responses.retrieve(final.id)
    assert stored.output_text == said and stored.usage == final.usage


async def test_a_function_is_called_and_its_output_answered(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    called = await client.responses.create(
        model=MODEL,
        input="What is the weather in Paris?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
        parallel_tool_calls=False,  # one call, as chat makes it
        max_output_tokens=60,
        temperature=0,  # a drawn call can run on past the budget, and a cut call's arguments don't parse
    )
    (call,) = [item for item in called.output if item.type == "function_call"]
    assert called.parallel_tool_calls is False and called.tool_choice == "required"
    assert call.name == "get_weather" and call.call_id and call.id.startswith("fc_")
    assert "city" in json.loads(call.arguments)
    answered = await client.responses.create(
        model=MODEL,
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 degrees."}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none",
        max_output_tokens=30,
    )
    assert answered.output and answered.output[0].type == "message" and answered.output_text
    items = await client.responses.input_items.list(answered.id)
    (output_item,) = items.data
    assert output_item.type == "function_call_output" and output_item.call_id == call.call_id  # type: ignore[union-attr]
    assert output_item.status == "completed"  # type: ignore[union-attr]

    # the same call sent back by the client itself, without a stored response
    again = await client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 degrees."},
        ],
        store=False,
        max_output_tokens=30,
    )
    assert again.output_text and again.store is False
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(again.id)


async def test_a_streamed_call_sends_its_arguments_as_deltas(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    async with client.responses.stream(
        model=MODEL,
        input="What is the weather in Rome?",
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=60,
        temperature=0,  # a drawn call can run on past the budget: `incomplete`, where the helper waits for `completed`
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    (call,) = [item for item in final.output if item.type == "function_call"]
    deltas = [event.delta for event in events if event.type == "response.function_call_arguments.delta"]
    (done,) = [event for event in events if event.type == "response.function_call_arguments.done"]
    assert "".join(deltas) == done.arguments == call.arguments and "city" in json.loads(call.arguments)
    assert len(deltas) > 2  # as the model writes them, not whole at the end
    added = [event for event in events if event.type == "response.output_item.added"]
    assert added[-1].item.type == "function_call" and added[-1].item.id == call.id


def _called_before(city: str, number: int) -> list[dict[str, Any]]:
    call_id = f"call_{number}"
    arguments = json.dumps({"city": city})
    return [
        {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": arguments},
        {"type": "function_call_output", "call_id": call_id, "output": "sunny"},
    ]


async def test_a_call_the_model_chose_streams_its_arguments_as_written(chat_oasis: Harness) -> None:
    """Under `tool_choice` auto too (the model has called the function twice before, so it calls it again), the
    call is held to its schema from where it opens and its arguments come as the model writes them."""
    client = chat_oasis.sdk()
    _newer_sdk(client)
    conversation: list[Any] = [
        {"role": "user", "content": "What's the weather in Rome?"},
        *_called_before("Rome", 1),
        {"role": "user", "content": "And in Oslo?"},
        *_called_before("Oslo", 2),
        {"role": "user", "content": "And in Paris?"},
    ]
    async with client.responses.stream(
        model=MODEL,
        input=conversation,
        tools=[WEATHER],
        max_output_tokens=60,
        temperature=0,  # type: ignore[list-item]
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    (call,) = [item for item in final.output if item.type == "function_call"]
    deltas = [event.delta for event in events if event.type == "response.function_call_arguments.delta"]
    assert "".join(deltas) == call.arguments and json.loads(call.arguments)["city"] == "Paris"
    assert len(deltas) > 2 and final.status == "completed"


class Colour(BaseModel):
    colour: str


async def test_structured_output_parses_into_the_schema(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    parsed = await client.responses.parse(
        model=MODEL, input="Name a colour as JSON.", text_format=Colour, max_output_tokens=40, temperature=0
    )
    assert isinstance(parsed.output_parsed, Colour) and parsed.output_parsed.colour
    assert parsed.text and parsed.text.format and parsed.text.format.type == "json_schema"


async def test_a_short_budget_makes_an_incomplete_response(chat_oasis: Harness) -> None:
    response = await _post(chat_oasis, input="Write a long story about a dragon.", max_output_tokens=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete" and body["usage"]["output_tokens"] == 3


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"input": "hi", "tools": [{"type": "web_search"}]}, 400, "tools[0].type"),
        ({"input": "hi", "metadata": {"k": "v" * 513}}, 400, "metadata.k"),
        ({"input": "hi", "previous_response_id": "resp_nope"}, 404, "previous_response_id"),
        ({"input": "hi", "background": True, "store": False}, 400, "store"),
        ({"input": "hi", "conversation": "conv_missing"}, 404, "conversation"),
        ({"input": "hi", "prompt": {"id": "pmpt_1"}}, 404, "prompt.id"),  # no prompt configured by that id
        ({"input": "hi", "prompt": {"version": "1"}}, 400, "prompt.id"),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, 400, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image"}]}]}, 400, "input[0].content[0].image_url"),
        ({}, 400, "input"),
    ],
)
async def test_bad_requests_are_refused_by_name(
    chat_oasis: Harness, body: dict[str, Any], status: int, param: str
) -> None:
    response = await _post(chat_oasis, **body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


async def test_an_unknown_model_is_refused_as_chat_refuses_it(chat_oasis: Harness) -> None:
    async with chat_oasis.http() as http:
        response = await http.post("/v1/responses", json={"model": "no-such-model", "input": "hi"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


async def test_input_items_page_newest_first(chat_oasis: Harness) -> None:
    items = [{"role": "user", "content": f"Message {i}"} for i in range(4)]
    created = (await _post(chat_oasis, input=items, max_output_tokens=2)).json()
    base = f"/v1/responses/{created['id']}/input_items"
    async with chat_oasis.http() as http:
        first = (await http.get(base, params={"limit": 3})).json()
        texts = [item["content"][0]["text"] for item in first["data"]]
        assert texts == ["Message 3", "Message 2", "Message 1"] and first["has_more"]
        rest = (await http.get(base, params={"after": first["last_id"]})).json()
        assert [item["content"][0]["text"] for item in rest["data"]] == ["Message 0"] and not rest["has_more"]
        oldest = (await http.get(base, params={"order": "asc", "limit": 1})).json()
        assert oldest["data"][0]["content"][0]["text"] == "Message 0"
        assert (await http.get("/v1/responses/resp_nope/input_items")).status_code == 404


class _SaysThenCalls(ScriptedChat):
    """An OpenAI-compatible model upstream that writes a sentence, then calls get_weather with its arguments in
    pieces, as OpenAI's models stream them; given the call's output, it answers in words."""

    usage = {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if body["messages"][-1]["role"] == "tool":
            return [{"role": "assistant", "content": "It is sunny in "}, {"content": "Oslo."}], "stop"
        opening = {"index": 0, "id": "call_w", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
        return [
            {"role": "assistant", "content": "Let me check. "},
            {"tool_calls": [opening]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]},
        ], "tool_calls"


async def test_an_upstream_models_text_and_call_stream_as_items(start_oasis: Callable[..., Any]) -> None:
    async with upstream_oasis(start_oasis, _SaysThenCalls) as harness:
        client = harness.sdk()
        _newer_sdk(client)
        async with client.responses.stream(
            model="remote",
            input="Weather in Oslo?",
            tools=[WEATHER],  # type: ignore[list-item]
        ) as stream:
            events = [event async for event in stream]
            final = await stream.get_final_response()
        message, call = final.output
        assert message.type == "message" and message.content[0].text == "Let me check. "  # type: ignore[union-attr]
        assert call.type == "function_call" and call.call_id == "call_w" and call.arguments == '{"city": "Oslo"}'
        pieces = [event.delta for event in events if event.type == "response.function_call_arguments.delta"]
        assert pieces == ['{"city": ', '"Oslo"}']
        # the message item is done before the call's opens, and each item's events name its place
        kinds = [(event.type, getattr(event, "output_index", None)) for event in events]
        assert kinds.index(("response.output_item.done", 0)) < kinds.index(("response.output_item.added", 1))
        assert final.usage is not None and final.usage.input_tokens == 20 and final.usage.output_tokens == 12

        async with client.responses.stream(  # the scripted upstream only streams
            model="remote",
            previous_response_id=final.id,
            input=[{"type": "function_call_output", "call_id": "call_w", "output": "sunny"}],
        ) as stream:
            answered = await stream.get_final_response()
        assert answered.output_text == "It is sunny in Oslo."


async def test_allowed_tools_limit_the_calls_to_those_named(chat_oasis: Harness) -> None:
    clock = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
    response = await _post(
        chat_oasis,
        input="What is the weather in Paris?",
        tools=[clock, WEATHER],
        tool_choice={"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_time"}]},
        max_output_tokens=40,
    )
    assert response.status_code == 200, response.text
    calls = [item for item in response.json()["output"] if item["type"] == "function_call"]
    assert calls and {call["name"] for call in calls} == {"get_time"}


class _Recorded(ScriptedChat):
    """An upstream that records what it is sent and answers with thinking, then words."""

    received: list[dict[str, Any]] | None = []
    usage = {"prompt_tokens": 30, "completion_tokens": 6, "total_tokens": 36}

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        return [
            {"role": "assistant", "reasoning_content": "The user "},
            {"reasoning_content": "wants a word."},
            {"content": "Blue"},
            {"content": "."},
        ], "stop"


@pytest.fixture
async def recorded(start_oasis: Callable[..., Any]) -> AsyncIterator[Harness]:
    _Recorded.received = []
    async with upstream_oasis(start_oasis, _Recorded) as harness:
        yield harness


async def test_what_a_model_is_sent_and_its_thinking_whole_and_streamed(recorded: Harness) -> None:
    client = recorded.sdk()
    _newer_sdk(client)
    assert _Recorded.received is not None
    first = await client.responses.create(
        model="remote", input="Name a colour.", instructions="Be brief.", tools=[], parallel_tool_calls=False
    )
    sent = _Recorded.received[-1]
    # what OpenAI's chat refuses without tools is not sent on
    assert "tools" not in sent and "parallel_tool_calls" not in sent and "tool_choice" not in sent
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
    ]
    reasoning, message = first.output
    assert reasoning.type == "reasoning" and reasoning.content[0].text == "The user wants a word."  # type: ignore[union-attr,index]
    assert message.type == "message" and first.output_text == "Blue."
    assert first.usage is not None and first.usage.input_tokens == 30

    # the instructions are not carried over; the earlier turn is (its thinking left out)
    stream = await client.responses.create(model="remote", input="Another.", previous_response_id=first.id, stream=True)
    events = [event async for event in stream]
    assert _Recorded.received[-1]["messages"] == [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": "Another."},
    ]
    kinds = [event.type for event in events]
    assert kinds[2:5] == ["response.output_item.added", "response.content_part.added", "response.reasoning_text.delta"]
    final = events[-1].response  # type: ignore[union-attr]
    assert kinds[-1] == "response.completed" and final.status == "completed" and final.completed_at
    assert [item.type for item in final.output] == ["reasoning", "message"] and final.output_text == "Blue."

    # outputs sent back whole, as the Agents SDK and LangChain do, make one assistant turn
    await client.responses.create(
        model="remote",
        input=[
            {"role": "user", "content": "Weather?"},
            *[item.model_dump() for item in first.output],
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{}", "id": "fc_1"},
            {"type": "function_call_output", "call_id": "call_1", "output": [{"type": "input_text", "text": "sun"}]},
        ],
        store=False,
    )
    assert _Recorded.received[-1]["messages"] == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Blue."}],
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sun"},
    ]


async def test_an_upstream_refusal_keeps_its_status_when_streamed(start_oasis: Callable[..., Any]) -> None:
    harness: Harness = await start_oasis(
        engine_factories=None,
        models=[{"id": "remote", "engine": "upstream", "options": {"base_url": "http://127.0.0.1:9/v1"}}],
    )
    async with harness.http() as http:
        response = await http.post("/v1/responses", json={"model": "remote", "input": "hi", "stream": True})
    assert response.status_code >= 400 and response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["message"]


async def test_responses_stay_in_their_project_and_unstored_ones_cannot_be_continued(chat_oasis: Harness) -> None:
    _, alpha_key = await chat_oasis.container.keys.create("alpha")
    _, beta_key = await chat_oasis.container.keys.create("beta")
    async with chat_oasis.http(api_key=alpha_key) as http:
        made = (await http.post("/v1/responses", json={"model": MODEL, "input": "hi", "max_output_tokens": 2})).json()
        unstored = await http.post(
            "/v1/responses", json={"model": MODEL, "input": "hi", "max_output_tokens": 2, "store": False}
        )
        again = {"model": MODEL, "input": "more", "previous_response_id": unstored.json()["id"]}
        assert (await http.post("/v1/responses", json=again)).status_code == 404
        assert (await http.get(f"/v1/responses/{made['id']}", params={"stream": "true"})).status_code == 400
    async with chat_oasis.http(api_key=beta_key) as http:
        assert (await http.get(f"/v1/responses/{made['id']}")).status_code == 404
        assert (await http.get(f"/v1/responses/{made['id']}/input_items")).status_code == 404
        assert (await http.delete(f"/v1/responses/{made['id']}")).status_code == 404
        assert (await http.post(f"/v1/responses/{made['id']}/cancel")).status_code == 404
        continued = {"model": MODEL, "input": "more", "previous_response_id": made["id"]}
        assert (await http.post("/v1/responses", json=continued)).status_code == 404
    async with chat_oasis.http(api_key=alpha_key) as http:
        assert (await http.get(f"/v1/responses/{made['id']}")).status_code == 200


# A custom tool (free text in a grammar), flat as the Responses API writes it: Codex CLI's apply_patch is one.
BOOK_DAY = {
    "type": "custom",
    "name": "book_day",
    "description": "Book the given day",
    "format": {"type": "grammar", "syntax": "regex", "definition": r"^\d{4}-\d{2}-\d{2}$"},
}


async def test_a_custom_tool_is_called_with_text_in_its_grammar(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    asked = {
        "model": MODEL,
        "input": "Book me a table for the first of May 2025.",
        "tools": [BOOK_DAY, WEATHER],
        "tool_choice": {"type": "custom", "name": "book_day"},
        "temperature": 0,
        "max_output_tokens": 40,
    }
    whole = await client.responses.create(**asked)
    (call,) = whole.output
    assert call.type == "custom_tool_call" and call.name == "book_day" and call.id.startswith("ctc_")  # type: ignore[union-attr]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", call.input)  # type: ignore[union-attr]

    stream = await client.responses.create(**asked, stream=True)
    events = [event async for event in stream]
    pieces = "".join(event.delta for event in events if event.type == "response.custom_tool_call_input.delta")
    (done,) = [event for event in events if event.type == "response.custom_tool_call_input.done"]
    final = events[-1].response  # type: ignore[union-attr]
    assert pieces == done.input == final.output[0].input and re.fullmatch(r"\d{4}-\d{2}-\d{2}", pieces)

    answered = await client.responses.create(
        model=MODEL,
        previous_response_id=whole.id,
        input=[{"type": "custom_tool_call_output", "call_id": call.call_id, "output": "Booked."}],  # type: ignore[union-attr]
        max_output_tokens=20,
    )
    assert answered.output_text


async def test_a_file_part_is_read_as_its_text(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    words = " ".join(f"lighthouse{i}" for i in range(60))
    uploaded = await client.files.create(file=("notes.txt", words.encode()), purpose="user_data")
    question = {"type": "input_text", "text": "What do the notes say?"}
    with_file = await client.responses.create(
        model=MODEL,
        input=[{"role": "user", "content": [{"type": "input_file", "file_id": uploaded.id}, question]}],
        max_output_tokens=4,
    )
    without = await client.responses.create(
        model=MODEL, input=[{"role": "user", "content": [question]}], max_output_tokens=4
    )
    assert with_file.usage and without.usage
    assert with_file.usage.input_tokens - without.usage.input_tokens > 100  # the file's sixty words were read
    items = await client.responses.input_items.list(with_file.id)
    assert items.data[0].content[0].type == "input_file"  # type: ignore[union-attr]


async def test_the_answers_logprobs_come_when_included_whole_and_streamed(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    asked: dict[str, Any] = {
        "model": MODEL,
        "input": "Name a colour.",
        "include": ["message.output_text.logprobs"],
        "top_logprobs": 3,
        "temperature": 0,
        "max_output_tokens": 8,
    }
    response = await client.responses.create(**asked)
    (part,) = response.output[0].content  # type: ignore[union-attr]
    tokens = part.logprobs
    assert tokens and len(tokens) == response.usage.output_tokens  # type: ignore[union-attr]
    assert "".join(token.token for token in tokens) == part.text
    for token in tokens:
        assert token.logprob <= 0 and bytes(token.bytes).decode("utf-8", "replace")
        assert len(token.top_logprobs) == 3
        # at temperature 0 the token drawn is the likeliest
        assert token.top_logprobs[0].token == token.token and token.top_logprobs[0].logprob == token.logprob

    stream = await client.responses.create(**asked, stream=True)
    events = [event async for event in stream]
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    streamed = [token for event in deltas for token in event.logprobs]  # type: ignore[union-attr]
    final = events[-1].response  # type: ignore[union-attr]
    assert [token.model_dump() for token in streamed] == [token.model_dump() for token in tokens]
    assert final.output[0].content[0].logprobs == tokens and final.output_text == response.output_text

    plain = await client.responses.create(model=MODEL, input="Name a colour.", temperature=0, max_output_tokens=8)
    assert plain.output[0].content[0].logprobs == []  # type: ignore[union-attr]


async def test_item_references_name_stored_items_of_the_project(chat_oasis: Harness) -> None:
    _, own_key = await chat_oasis.container.keys.create("own")
    _, other_key = await chat_oasis.container.keys.create("other")
    client = chat_oasis.sdk(api_key=own_key)
    _newer_sdk(client)
    first = await client.responses.create(model=MODEL, input="My name is Ada.", max_output_tokens=8)
    (asked,) = (await client.responses.input_items.list(first.id)).data
    answer = first.output[0]
    question = {"role": "user", "content": "What is my name?"}
    referenced = await client.responses.create(
        model=MODEL,
        input=[{"type": "item_reference", "id": asked.id}, {"id": answer.id}, question],  # `type` may be left out
        max_output_tokens=8,
    )
    alone = await client.responses.create(model=MODEL, input=[question], max_output_tokens=8)
    # the stored items were read in their place: listed as the response's input, and in its prompt
    listed = (await client.responses.input_items.list(referenced.id, order="asc")).data
    assert [(item.type, getattr(item, "role", None)) for item in listed] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
    ]
    assert listed[0].content[0].text == "My name is Ada."  # type: ignore[union-attr]
    assert referenced.usage and alone.usage and referenced.usage.input_tokens > alone.usage.input_tokens + 5

    # a conversation's item too
    conversation = await client.conversations.create(items=[{"role": "user", "content": "I live in Paris."}])
    (kept,) = (await client.conversations.items.list(conversation.id)).data
    from_conversation = await client.responses.create(
        model=MODEL, input=[{"type": "item_reference", "id": kept.id}, question], max_output_tokens=4
    )
    (first_item, _) = (await client.responses.input_items.list(from_conversation.id, order="asc")).data
    assert first_item.content[0].text == "I live in Paris."  # type: ignore[union-attr]

    for sdk, item_id in ((client, "msg_missing"), (chat_oasis.sdk(api_key=other_key), asked.id)):
        with pytest.raises(openai.NotFoundError) as missing:
            await sdk.responses.create(model=MODEL, input=[{"type": "item_reference", "id": item_id}, question])
        assert missing.value.body["param"] == "input[0].id"  # type: ignore[index]


async def test_an_image_named_by_file_id_is_sent_as_its_bytes(recorded: Harness) -> None:
    client = recorded.sdk()
    _newer_sdk(client)
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    image = await client.files.create(file=("dot.png", png), purpose="vision")
    asked = [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "file_id": image.id}]
    response = await client.responses.create(model="remote", input=[{"role": "user", "content": asked}])
    assert response.output_text == "Blue."
    (sent,) = _Recorded.received or []
    parts = sent["messages"][-1]["content"]
    assert parts[1]["type"] == "image_url"
    assert parts[1]["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(png).decode()
    # listed as it was asked: by the file's id, and stored so (not its bytes)
    (item,) = (await client.responses.input_items.list(response.id)).data
    assert item.content[1].file_id == image.id  # type: ignore[union-attr]
    async with recorded.container.db.session() as session:
        stored = await session.scalar(select(StoredResponse).where(StoredResponse.id == response.id))
    assert stored is not None and "base64" not in stored.conversation_json and image.id in stored.conversation_json

    # a later turn reads the image again; once its file is deleted, it is said to be gone
    await client.responses.create(model="remote", input="And now?", previous_response_id=response.id)
    again = (_Recorded.received or [])[-1]["messages"]
    assert again[0]["content"][1]["image_url"]["url"] == parts[1]["image_url"]["url"]
    await client.files.delete(image.id)
    await client.responses.create(model="remote", input="And now?", previous_response_id=response.id)
    gone = (_Recorded.received or [])[-1]["messages"][0]["content"][1]
    assert gone == {"type": "text", "text": f"(an image, file {image.id}, no longer available)"}

    text = await client.files.create(file=("notes.txt", b"not an image"), purpose="user_data")
    for file_id, error in ((text.id, openai.BadRequestError), ("file-missing", openai.NotFoundError)):
        with pytest.raises(error) as refused:
            await client.responses.create(
                model="remote", input=[{"role": "user", "content": [{"type": "input_image", "file_id": file_id}]}]
            )
        assert refused.value.body["param"] == "input[0].content[0].file_id"  # type: ignore[index]


_PROMPTS = [
    {"id": "pmpt_support", "version": 1, "model": "remote", "instructions": "You help customers of {{company}}."},
    {
        "id": "pmpt_support",
        "version": "2",
        "model": "remote",
        "instructions": "You help customers of {{ company }}, briefly.",
        "messages": [
            {"role": "user", "content": "The product: {{photo}} Describe it."},
            {"role": "assistant", "content": "It is a {{colour}} mug."},
        ],
    },
    {"id": "pmpt_modelless", "instructions": "Be kind."},
]


def _texts(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


async def test_a_configured_prompt_is_read_before_the_conversation(start_oasis: Callable[..., Any]) -> None:
    _Recorded.received = []
    dot = (
        "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5E"
    )
    dot += "rkJggg=="
    async with upstream_oasis(start_oasis, _Recorded, responses={"prompts": _PROMPTS}) as harness:
        client = harness.sdk()
        _newer_sdk(client)
        variables: dict[str, Any] = {
            "company": "Acme",
            "photo": {"type": "input_image", "image_url": dot},
            "colour": {"type": "input_text", "text": "blue"},
        }
        # no model: the prompt's; no version: the highest
        response = await client.responses.create(  # type: ignore[call-overload]
            prompt={"id": "pmpt_support", "variables": variables}, input="Is it dishwasher safe?"
        )
        assert response.model == "remote" and response.output_text == "Blue."
        assert response.prompt is not None and (response.prompt.id, response.prompt.version) == ("pmpt_support", "2")
        sent = (_Recorded.received or [])[-1]["messages"]
        assert [message["role"] for message in sent] == ["developer", "user", "assistant", "user"]
        assert _texts(sent[0]) == "You help customers of Acme, briefly."
        # an image variable is a part of its own where its placeholder was
        assert [part["type"] for part in sent[1]["content"]] == ["text", "image_url", "text"]
        assert sent[1]["content"][1]["image_url"]["url"] == dot and _texts(sent[1]) == "The product:  Describe it."
        assert _texts(sent[2]) == "It is a blue mug." and _texts(sent[3]) == "Is it dishwasher safe?"
        # the response's instructions are the prompt's messages, as OpenAI answers them
        assert isinstance(response.instructions, list)
        assert [item.role for item in response.instructions] == ["developer", "user", "assistant"]  # type: ignore[union-attr]
        assert response.instructions[0].content[0].text == "You help customers of Acme, briefly."  # type: ignore[union-attr,index]
        assert (await client.responses.retrieve(response.id)).prompt == response.prompt
        # in the background, the worker reads the same prompt and version
        queued = await client.responses.create(  # type: ignore[call-overload]
            prompt={"id": "pmpt_support", "variables": variables}, input="Is it dishwasher safe?", background=True
        )
        while (polled := await client.responses.retrieve(queued.id)).status in ("queued", "in_progress"):
            await asyncio.sleep(0.05)
        assert polled.status == "completed" and polled.prompt == response.prompt and polled.model == "remote"
        assert _texts((_Recorded.received or [])[-1]["messages"][0]) == "You help customers of Acme, briefly."
        # a prompt's messages may be all a response says
        alone = await client.responses.create(prompt={"id": "pmpt_support", "variables": variables})  # type: ignore[call-overload]
        assert alone.output_text == "Blue."
        assert [message["role"] for message in (_Recorded.received or [])[-1]["messages"]] == [
            "developer",
            "user",
            "assistant",
        ]
        # counted with the prompt's model (an upstream's, whose tokenizer is not here)
        with pytest.raises(openai.BadRequestError, match="Model 'remote' is served by an upstream engine"):
            await client.responses.input_tokens.count(
                extra_body={"prompt": {"id": "pmpt_support", "variables": variables}}
            )

        # as instructions, a prompt is not read again by a later turn that does not name it
        await client.responses.create(model="remote", input="And the lid?", previous_response_id=response.id)
        later = (_Recorded.received or [])[-1]["messages"]
        assert "Acme" not in json.dumps(later) and _texts(later[0]) == "Is it dishwasher safe?"

        # a version by name; the request's own instructions come after the prompt's
        await client.responses.create(
            model="remote",
            prompt={"id": "pmpt_support", "version": "1", "variables": {"company": "Initech"}},
            instructions="Answer in French.",
            input="Hi",
        )
        sent = (_Recorded.received or [])[-1]["messages"]
        assert [_texts(message) for message in sent] == ["You help customers of Initech.", "Answer in French.", "Hi"]
        # with a prompt's messages, the request's instructions come right after the prompt's own
        await client.responses.create(  # type: ignore[call-overload]
            prompt={"id": "pmpt_support", "variables": variables}, instructions="Answer in French.", input="Hi"
        )
        sent = (_Recorded.received or [])[-1]["messages"]
        assert [message["role"] for message in sent] == ["developer", "system", "user", "assistant", "user"]

        async with harness.http() as http:
            refused = {
                "prompt.variables": {"prompt": {"id": "pmpt_support", "variables": {"company": "Acme"}}},
                "prompt.version": {"prompt": {"id": "pmpt_support", "version": "9"}},
                "prompt.variables.company": {"prompt": {"id": "pmpt_support", "variables": {"company": 7}}},
                "model": {"prompt": {"id": "pmpt_modelless"}},  # neither the request nor the prompt names one
            }
            for param, body in refused.items():
                reply = await http.post("/v1/responses", json={"input": "hi", **body})
                status = 404 if param == "prompt.version" else 400
                assert (reply.status_code, reply.json()["error"]["param"]) == (status, param), reply.text
            missing = await http.post("/v1/responses", json={"input": "hi", **refused["prompt.variables"]})
            assert "Missing prompt variables: colour, photo." in missing.json()["error"]["message"]
            unnamed = await http.post("/v1/responses", json={"input": "hi"})
            assert unnamed.json()["error"] == {
                "message": "Missing required parameter: 'model'.",
                "type": "invalid_request_error",
                "param": "model",
                "code": None,
            }


async def test_input_tokens_are_counted_as_the_response_reads_them(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    if not hasattr(client.responses, "input_tokens"):
        pytest.skip("this SDK cannot count input tokens")
    asked: dict[str, Any] = {
        "model": MODEL,
        "instructions": "Answer in one word.",
        "input": "What is the capital of France?",
        "tools": [WEATHER],
    }
    async with chat_oasis.container.db.session() as session:
        stored_before = len((await session.scalars(select(StoredResponse.id))).all())
    counted = await client.responses.input_tokens.count(**asked)
    assert counted.object == "response.input_tokens"
    async with chat_oasis.container.db.session() as session:  # counting stores nothing
        assert len((await session.scalars(select(StoredResponse.id))).all()) == stored_before
    answered = await client.responses.create(**asked, max_output_tokens=16, temperature=0)
    assert answered.usage is not None and counted.input_tokens == answered.usage.input_tokens
    # the tools and the instructions are in the prompt counted
    alone = await client.responses.input_tokens.count(model=MODEL, input="What is the capital of France?")
    assert 0 < alone.input_tokens < counted.input_tokens - 20
    # an earlier response continued: its turns are counted too
    follow_up = await client.responses.input_tokens.count(
        model=MODEL, input="And of Germany?", previous_response_id=answered.id
    )
    fresh = await client.responses.input_tokens.count(model=MODEL, input="And of Germany?")
    assert follow_up.input_tokens > fresh.input_tokens + 10
    async with chat_oasis.http() as http:
        unnamed = await http.post("/v1/responses/input_tokens", json={"input": "What is the capital of France?"})
        assert unnamed.status_code == 200 and unnamed.json()["input_tokens"] == alone.input_tokens
        cases: list[tuple[dict[str, Any], int, str | None]] = [
            ({"model": MODEL}, 400, "input"),
            ({"model": "no-such-model", "input": "hi"}, 404, "model"),
            ({"model": MODEL, "input": "hi", "previous_response_id": "resp_missing"}, 404, "previous_response_id"),
            ({"model": MODEL, "input": 5}, 400, "input"),
        ]
        for body, status, param in cases:
            reply = await http.post("/v1/responses/input_tokens", json=body)
            assert reply.status_code == status, (body, reply.text)
            assert reply.json()["error"]["param"] == param, (body, reply.text)


async def test_an_upstream_models_input_tokens_are_not_guessed(start_oasis: Callable[..., Any]) -> None:
    async with upstream_oasis(start_oasis, _SaysThenCalls) as harness, harness.http() as http:
        reply = await http.post("/v1/responses/input_tokens", json={"model": "remote", "input": "hi"})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "model", reply.text


class _Summarizes(ScriptedChat):
    """A model upstream that writes a summary when asked to compact, and otherwise notes what it is told."""

    received: list[dict[str, Any]] | None = []
    usage = {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if str(body["messages"][-1]["content"]).startswith("Your context is about to be compacted"):
            return [{"role": "assistant", "content": "The user is Ada; she likes green."}], "stop"
        return [{"role": "assistant", "content": "Noted."}], "stop"


async def test_a_conversation_is_compacted_and_read_back_as_its_summary(start_oasis: Callable[..., Any]) -> None:
    _Summarizes.received = []
    async with upstream_oasis(start_oasis, _Summarizes) as harness:
        client = harness.sdk()
        _newer_sdk(client)
        if not hasattr(client.responses, "compact"):
            pytest.skip("this SDK cannot compact")
        first = await client.responses.create(model="remote", input="My name is Ada.")
        compacted = await client.responses.compact(model="remote", previous_response_id=first.id, input="I like green.")
        assert compacted.object == "response.compaction" and compacted.output[-1].type == "compaction"
        async with harness.http() as http:  # its JSON, which the SDK's models do not keep as sent for user messages
            body = {"model": "remote", "previous_response_id": first.id, "input": "I like green."}
            shown = (await http.post("/v1/responses/compact", json=body)).json()
        assert shown["object"] == "response.compaction" and shown["id"].startswith("resp_")
        *users, item = shown["output"]
        assert [(user["role"], user["content"]) for user in users] == [
            ("user", [{"type": "input_text", "text": "My name is Ada."}]),
            ("user", [{"type": "input_text", "text": "I like green."}]),
        ]
        assert item["type"] == "compaction" and item["id"].startswith("cmp_") and item["encrypted_content"]
        assert "Ada" not in item["encrypted_content"]  # opaque to a glance, as OpenAI's
        assert shown["usage"]["input_tokens"] == 40 and shown["usage"]["output_tokens"] == 9
        # the model read the whole conversation (the earlier answer too), then the request to summarize it
        asked = (_Summarizes.received or [])[-1]["messages"]
        assert [message["role"] for message in asked] == ["user", "assistant", "user", "user"]
        assert asked[1]["content"] == "Noted."

        # sent back as the next input, the compaction is read as its summary, in its place
        later = await client.responses.create(
            model="remote", input=[*shown["output"], {"role": "user", "content": "What is my name?"}]
        )
        read = (_Summarizes.received or [])[-1]["messages"]
        assert [message["role"] for message in read] == ["user", "user", "user", "user"]
        assert read[2]["content"].endswith("\n\nThe user is Ada; she likes green.")
        listed = await client.responses.input_items.list(later.id, order="asc")
        assert [listed_item.type for listed_item in listed.data] == ["message", "message", "compaction", "message"]
        async with harness.http() as http:
            # compacted again, the earlier compaction is summarized anew, not kept as a user message
            body = {"model": "remote", "input": [*shown["output"], {"role": "user", "content": "What is my name?"}]}
            again = (await http.post("/v1/responses/compact", json=body)).json()
            assert [user["content"][0]["text"] for user in again["output"][:-1]] == [
                "My name is Ada.",
                "I like green.",
                "What is my name?",
            ]
            nested = base64.urlsafe_b64encode(b"[" * 100_000).decode()
            for content in ("gAAAAABoNotOneOfOurs", "oasis.compaction.v1." + nested):
                forged = {"type": "compaction", "encrypted_content": content}
                reply = await http.post("/v1/responses", json={"model": "remote", "input": [forged]})
                assert reply.status_code == 400, reply.text
                assert reply.json()["error"]["param"] == "input[0].encrypted_content"
            # nothing was stored by compacting
            assert (await http.get(f"/v1/responses/{shown['id']}")).status_code == 404
            missing = await http.post(
                "/v1/responses/compact", json={"model": "remote", "previous_response_id": "resp_x"}
            )
            assert missing.status_code == 404 and missing.json()["error"]["param"] == "previous_response_id"


async def test_the_agents_sdks_compaction_session_compacts_through_this_server(start_oasis: Callable[..., Any]) -> None:
    """OpenAI's Agents SDK's OpenAIResponsesCompactionSession calls responses.compact after a turn and keeps the
    compacted history; the next turn sends it, and the model reads the summary in place of the earlier turns."""
    agents = pytest.importorskip("agents")
    _Summarizes.received = []
    # the session takes only OpenAI-style model names
    async with upstream_oasis(start_oasis, _Summarizes, aliases=("gpt-4.1",)) as harness:
        client = harness.sdk()
        _newer_sdk(client)
        agents.set_tracing_disabled(True)  # tracing posts to OpenAI
        session = agents.OpenAIResponsesCompactionSession(
            "notes",
            agents.SQLiteSession("notes"),
            client=client,
            model="gpt-4.1",
            should_trigger_compaction=lambda context: True,
        )
        model = agents.OpenAIResponsesModel(model="gpt-4.1", openai_client=client)
        agent = agents.Agent(name="Notes", instructions="Take note.", model=model)
        await agents.Runner.run(agent, "My name is Ada.", session=session)
        kept = await session.get_items()
        assert [item.get("type", "message") for item in kept] == ["message", "compaction"], kept
        await agents.Runner.run(agent, "What is my name?", session=session)
        (read,) = [
            asked["messages"]
            for asked in _Summarizes.received or []
            if asked["messages"][-1]["content"] == "What is my name?"
        ]
        assert [message["role"] for message in read] == ["system", "user", "user", "user"]
        assert read[2]["content"].endswith("The user is Ada; she likes green.")


async def test_a_local_model_compacts_a_conversation(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    if not hasattr(client.responses, "compact"):
        pytest.skip("this SDK cannot compact")
    compacted = await client.responses.compact(model=MODEL, input="My name is Ada and my favourite colour is green.")
    user, item = compacted.output
    assert user.type == "message" and item.type == "compaction"
    assert compacted.usage.output_tokens > 0
    answered = await client.responses.create(
        model=MODEL,
        input=[item.model_dump(exclude_none=True), {"role": "user", "content": "What is my name?"}],  # type: ignore[list-item]
        max_output_tokens=16,
    )
    assert answered.status in ("completed", "incomplete") and answered.usage is not None
    alone = await client.responses.input_tokens.count(model=MODEL, input="What is my name?")
    assert answered.usage.input_tokens > alone.input_tokens + 10  # the summary was read before the question


def _days_by_the_river() -> list[Any]:
    """A history (eight days' turns, then a question) longer than a 1024-token context."""
    history: list[Any] = []
    for day in range(8):
        history += [
            {"role": "user", "content": f"Day {day}: " + "I walked along the river and counted the boats. " * 12},
            {"role": "assistant", "content": "That sounds like a calm day by the water. " * 8},
        ]
    return [*history, {"role": "user", "content": "What did I do on the last day?"}]


async def test_a_conversation_longer_than_the_context_is_compacted_from_what_fits(
    start_oasis: Callable[..., Any],
) -> None:
    """The whole history sent as input (as the SDK and Codex send it), longer than a small context: it is compacted
    from as much as fits beside the summary (not refused), and every user message is in the output."""
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(context_length=1024)])
    client = harness.sdk()
    _newer_sdk(client)
    if not hasattr(client.responses, "compact"):
        pytest.skip("this SDK cannot compact")
    history = _days_by_the_river()
    compacted = await client.responses.compact(model=MODEL, input=history)
    *users, item = compacted.output
    assert len(users) == 9 and item.type == "compaction"
    assert 0 < compacted.usage.input_tokens < 1024 - 512  # what the model read fitted beside the summary
    # what cannot be cut (no user message to cut before) and does not fit is refused, not summarized from nothing
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.compact(model=MODEL, input=[{**history[1], "content": "The river was calm. " * 300}])
    assert refused.value.body["code"] == "context_length_exceeded"  # type: ignore[index]


def _compacting(threshold: int | None) -> dict[str, Any]:
    """`context_management` asking for server-side compaction (sent as extra body: older SDKs lack the field)."""
    entry: dict[str, Any] = {"type": "compaction"}
    if threshold is not None:
        entry["compact_threshold"] = threshold
    return {"context_management": [entry]}


def _last_read(received: list[dict[str, Any]] | None) -> list[tuple[str, str]]:
    """The roles and texts of the messages the scripted model read last."""
    return [(message["role"], str(message.get("content"))) for message in (received or [])[-1]["messages"]]


async def test_a_response_compacts_its_conversation_past_the_threshold(start_oasis: Callable[..., Any]) -> None:
    """`context_management`: once the rendered prompt reaches `compact_threshold`, the conversation is summarized
    before the model answers. The compaction item comes first in the output, the model answers from the summary and
    the newest user message, and a later response (chained either way) reads the conversation from the summary on."""
    _Summarizes.received = []
    async with upstream_oasis(start_oasis, _Summarizes) as harness:
        client = harness.sdk()
        _newer_sdk(client)
        first = await client.responses.create(model="remote", input="My name is Ada.")
        # far below the threshold: nothing is compacted
        kept = await client.responses.create(
            model="remote", previous_response_id=first.id, input="Hello.", extra_body=_compacting(100_000)
        )
        assert [item.type for item in kept.output] == ["message"]
        assert [role for role, _ in _last_read(_Summarizes.received)] == ["user", "assistant", "user"]

        second = await client.responses.create(
            model="remote", previous_response_id=first.id, input="I like green.", extra_body=_compacting(10)
        )
        assert [item.type for item in second.output] == ["compaction", "message"]
        assert second.output[0].id.startswith("cmp_") and second.output_text == "Noted."
        summarized, answered = (_Summarizes.received or [])[-2:]
        # the summary was written from the whole conversation, this response's input too
        assert [message["role"] for message in summarized["messages"]] == ["user", "assistant", "user", "user"]
        assert summarized["messages"][-1]["content"].startswith("Your context is about to be compacted")
        # the answer read the summary, then the newest user message; not the turns it stands for
        read = [(message["role"], message["content"]) for message in answered["messages"]]
        assert len(read) == 2 and read[0][1].endswith("The user is Ada; she likes green.")
        assert read[1] == ("user", "I like green.")
        # its usage counts the summary's generation with the answer's
        assert second.usage is not None and second.usage.input_tokens == 80 and second.usage.output_tokens == 18

        # chained by id: the conversation is read from the summary on
        await client.responses.create(model="remote", previous_response_id=second.id, input="What is my name?")
        assert [role for role, _ in _last_read(_Summarizes.received)] == ["user", "assistant", "user"]
        assert _last_read(_Summarizes.received)[0][1].endswith("she likes green.")
        # chained by input (the output appended): the same, whatever came before the compaction item
        async with harness.http() as http:
            shown = (await http.get(f"/v1/responses/{second.id}")).json()
        history = [
            {"role": "user", "content": "My name is Ada."},
            {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "I like green."},
            *shown["output"],
            {"role": "user", "content": "What is my name?"},
        ]
        await client.responses.create(model="remote", input=history)
        assert [role for role, _ in _last_read(_Summarizes.received)] == ["user", "assistant", "user"]
        # compacted again, the newer summary is written from the older one and what followed it
        third = await client.responses.create(model="remote", input=history, extra_body=_compacting(10))
        assert [item.type for item in third.output] == ["compaction", "message"]
        again = (_Summarizes.received or [])[-2]["messages"]
        assert [message["role"] for message in again] == ["user", "assistant", "user", "user"]
        assert again[0]["content"].endswith("she likes green.")

        # streamed: the compaction item's events come first
        stream = await client.responses.create(
            model="remote",
            previous_response_id=first.id,
            input="I like green.",
            stream=True,
            extra_body=_compacting(10),
        )
        events = [event async for event in stream]
        added = [event.item.type for event in events if event.type == "response.output_item.added"]  # type: ignore[union-attr]
        assert added == ["compaction", "message"]
        assert [item.type for item in events[-1].response.output] == ["compaction", "message"]  # type: ignore[union-attr]

        # in the background: compacted as it is generated
        queued = await client.responses.create(
            model="remote",
            previous_response_id=first.id,
            input="I like green.",
            background=True,
            extra_body=_compacting(10),
        )
        while (polled := await client.responses.retrieve(queued.id)).status in ("queued", "in_progress"):
            await asyncio.sleep(0.05)
        assert polled.status == "completed" and [item.type for item in polled.output] == ["compaction", "message"]
        assert polled.usage is not None and polled.usage.output_tokens == 18

        # a conversation keeps the compaction item, and its next response reads from it on
        conversation = await client.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
        await client.responses.create(
            model="remote", conversation=conversation.id, input="I like green.", extra_body=_compacting(10)
        )
        items = await client.conversations.items.list(conversation.id, order="asc")
        assert [item.type for item in items.data] == ["message", "message", "compaction", "message"]
        await client.responses.create(model="remote", conversation=conversation.id, input="What is my name?")
        assert [role for role, _ in _last_read(_Summarizes.received)] == ["user", "assistant", "user"]

        async with harness.http() as http:
            cases: list[tuple[Any, str]] = [
                ("compaction", "context_management"),
                ([{"type": "truncate"}], "context_management[0].type"),
                ([{"type": "compaction", "compact_threshold": 0}], "context_management[0].compact_threshold"),
                ([{"type": "compaction", "compact_threshold": "many"}], "context_management[0].compact_threshold"),
            ]
            for management, param in cases:
                body = {"model": "remote", "input": "hi", "context_management": management}
                reply = await http.post("/v1/responses", json=body)
                assert reply.status_code == 400 and reply.json()["error"]["param"] == param, (management, reply.text)


async def test_the_agents_sdks_context_management_compacts_on_this_server(start_oasis: Callable[..., Any]) -> None:
    """OpenAI's Agents SDK with `ModelSettings(context_management=...)` and a plain session: the first run's output
    holds the compaction item, the session keeps it, and the next run's model reads from the summary on."""
    agents = pytest.importorskip("agents")
    if "context_management" not in agents.ModelSettings.__dataclass_fields__:
        pytest.skip("this Agents SDK has no context_management")
    _Summarizes.received = []
    async with upstream_oasis(start_oasis, _Summarizes) as harness:
        client = harness.sdk()
        _newer_sdk(client)
        agents.set_tracing_disabled(True)  # tracing posts to OpenAI
        settings = agents.ModelSettings(context_management=[{"type": "compaction", "compact_threshold": 10}])
        model = agents.OpenAIResponsesModel(model="remote", openai_client=client)
        agent = agents.Agent(name="Notes", instructions="Take note.", model=model, model_settings=settings)
        session = agents.SQLiteSession("notes")
        await agents.Runner.run(agent, "My name is Ada.", session=session)
        kept = await session.get_items()
        assert [item.get("type", "message") for item in kept] == ["message", "compaction", "message"], kept
        result = await agents.Runner.run(agent, "What is my name?", session=session)
        assert result.final_output == "Noted."
        read = (_Summarizes.received or [])[-1]["messages"]
        # compacted again (past the threshold), the newer summary was written from the older one on
        assert [message["role"] for message in read] == ["system", "user", "user"]
        summarized = (_Summarizes.received or [])[-2]["messages"]
        assert [message["role"] for message in summarized] == ["system", "user", "assistant", "user", "user"]
        assert summarized[1]["content"].endswith("The user is Ada; she likes green.")


async def test_a_local_model_compacts_a_conversation_longer_than_its_context(start_oasis: Callable[..., Any]) -> None:
    """`context_management` without a threshold: a history longer than the model's context is compacted before it
    answers, where without it the response is refused as too long."""
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(context_length=1024)])
    client = harness.sdk()
    _newer_sdk(client)
    history = _days_by_the_river()
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(model=MODEL, input=history, max_output_tokens=16)
    assert refused.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    answered = await client.responses.create(
        model=MODEL, input=history, max_output_tokens=16, temperature=0, extra_body=_compacting(None)
    )
    assert answered.status in ("completed", "incomplete") and answered.output[0].type == "compaction"
    assert answered.output[-1].type == "message" and answered.output_text
    # its usage counts the summary's generation (which read the history) with the answer's
    counted = await client.responses.input_tokens.count(model=MODEL, input="What did I do on the last day?")
    assert answered.usage is not None and answered.usage.input_tokens > counted.input_tokens + 200
    assert answered.usage.output_tokens > 16  # the answer wrote at most 16
    # continued (truncation off), it fits: read from the summary on, not from the first day (a 400 if it were)
    follow_up = await client.responses.create(
        model=MODEL, previous_response_id=answered.id, input="And before?", max_output_tokens=8
    )
    assert follow_up.status in ("completed", "incomplete")
    # what must be read whole (from the newest user message on) does not fit: refused before any summary, streamed
    # or not, with the status a refusal has
    long_question = [*history[:-1], {"role": "user", "content": "The river was calm. " * 300}]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as too_long:
            await client.responses.create(model=MODEL, input=long_question, stream=stream, extra_body=_compacting(None))
        assert too_long.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
