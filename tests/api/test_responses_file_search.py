"""The built-in file_search tool of the Responses API, on the real SmolLM2 and e5 engines through the official SDK:
the model's call searches the tool's vector stores, the search is an output item (with its results when `include`
asks), the answer that follows reads them and is annotated with `file_citation`s, whole and streamed, and a later
response reads the results again. Bad tool settings are 400s and 404s."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import openai
import pytest

from tests.api.test_file_search import FILES, QUESTION
from tests.api.test_responses import _newer_sdk, _plain
from tests.api.test_vector_stores import completed_store, stores
from tests.conftest import E5, Harness, smollm
from tests.scripted_upstream import ScriptedChat, upstream_oasis

MODEL = "gpt-4o-mini"
FORCED: Any = {"type": "file_search"}
INSTRUCTIONS = "Answer the question from the files, in one sentence."
# The output budget covers the model's call as well as its answer (as OpenAI counts it); the shipped 135M model,
# forced to call, writes its query out to the schema's 100 characters (80 tokens or more).
ANSWER_BUDGET = 160


@pytest.fixture
async def search_oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(), E5])
    return harness


def _tool(store_id: str, **settings: Any) -> Any:
    return {"type": "file_search", "vector_store_ids": [store_id], **settings}


def _answered(response: Any) -> None:
    """Completed, or cut by its token budget (the shipped 135M model may repeat itself)."""
    assert response.error is None
    assert response.status == "completed" or (
        response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    ), response.status


def _check_citations(message: Any, found: dict[str, str]) -> list[Any]:
    """Every annotation cites a file the search found, by its name, at a place in the text (OpenAI's form: an
    index, no marker written into the text)."""
    (part,) = message.content
    for annotation in part.annotations:
        assert annotation.type == "file_citation"
        assert annotation.file_id in found and annotation.filename == found[annotation.file_id]
        assert 0 < annotation.index <= len(part.text)
    assert "【" not in part.text
    return list(part.annotations)


async def test_a_response_searches_the_tools_store_and_answers_from_what_it_found(search_oasis: Harness) -> None:
    client = search_oasis.sdk()
    _newer_sdk(client)
    store_id, ids = await completed_store(search_oasis, FILES)
    response = await client.responses.create(
        model=MODEL,
        input=QUESTION,
        instructions=INSTRUCTIONS,
        tools=[_tool(store_id)],
        tool_choice=FORCED,
        include=["file_search_call.results"],
        temperature=0,
        max_output_tokens=ANSWER_BUDGET,
    )
    _answered(response)
    search, message = response.output
    assert search.type == "file_search_call" and search.id.startswith("fs_") and search.status == "completed"
    assert search.queries and all(isinstance(query, str) and query for query in search.queries)
    assert search.results, "the bees file answers the question"
    best = search.results[0]
    assert best.file_id == ids["bees.html"] and best.filename == "bees.html" and "two thousand eggs" in best.text
    assert all(0 < result.score <= 1 for result in search.results)
    scores = [result.score for result in search.results]
    assert scores == sorted(scores, reverse=True)
    assert message.type == "message" and message.role == "assistant" and response.output_text
    # At temperature 0 the model answers with the passage's own sentence: cited.
    assert _check_citations(message, {result.file_id: result.filename for result in search.results})

    # The answer was written with the results in its prompt: its input holds the passages, and the two
    # generations (the call, then the answer) are counted together.
    plain = await client.responses.create(
        model=MODEL, input=QUESTION, instructions=INSTRUCTIONS, temperature=0, max_output_tokens=16
    )
    assert response.usage is not None and plain.usage is not None
    assert response.usage.input_tokens > 2 * plain.usage.input_tokens + 100
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens

    stored = await client.responses.retrieve(response.id)
    assert stored.output[0].model_dump() == search.model_dump() and stored.output_text == response.output_text
    assert stored.tools[0].type == "file_search" and stored.tools[0].vector_store_ids == [store_id]  # type: ignore[union-attr]


async def test_results_are_on_the_item_only_when_included(search_oasis: Harness) -> None:
    client = search_oasis.sdk()
    _newer_sdk(client)
    store_id, ids = await completed_store(search_oasis, FILES)
    response = await client.responses.create(
        model=MODEL,
        input=QUESTION,
        tools=[_tool(store_id)],
        tool_choice="required",
        temperature=0,
        max_output_tokens=ANSWER_BUDGET,
    )
    _answered(response)
    search = response.output[0]
    assert search.type == "file_search_call" and search.queries and search.results is None
    # The citations still name the files that were found.
    message = next(item for item in response.output if item.type == "message")
    _check_citations(message, {file_id: name for name, file_id in ids.items()})


async def test_a_streamed_response_shows_the_search_and_the_citations_as_they_come(search_oasis: Harness) -> None:
    client = search_oasis.sdk()
    _newer_sdk(client)
    store_id, _ = await completed_store(search_oasis, FILES)
    # The events as they come (the SDK's `responses.stream` helper waits for `response.completed` only, and the
    # 135M model may use up its budget: `response.incomplete`)
    stream = await client.responses.create(
        model=MODEL,
        input=QUESTION,
        instructions=INSTRUCTIONS,
        tools=[_tool(store_id)],
        tool_choice=FORCED,
        include=["file_search_call.results"],
        temperature=0,
        max_output_tokens=ANSWER_BUDGET,
        stream=True,
    )
    events = [event async for event in stream]
    final = events[-1].response  # type: ignore[union-attr]
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    search_kinds = [
        "response.output_item.added",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.output_item.done",
    ]
    assert kinds[2:7] == search_kinds, kinds[:8]
    search = final.output[0]
    assert all(getattr(event, "item_id", search.id) == search.id for event in events[3:6])
    assert events[2].item.type == "file_search_call" and events[2].item.status == "in_progress"  # type: ignore[union-attr]
    assert events[6].item.model_dump() == search.model_dump() and search.results  # type: ignore[union-attr]
    assert [event.sequence_number for event in events] == list(range(len(events)))

    message = final.output[1]
    annotations = _check_citations(message, {result.file_id: result.filename for result in search.results})
    added = [event for event in events if event.type == "response.output_text.annotation.added"]
    assert annotations and added
    assert [_plain(event.annotation) for event in added] == [annotation.model_dump() for annotation in annotations]
    assert [event.annotation_index for event in added] == list(range(len(added)))  # type: ignore[union-attr]
    assert all(event.output_index == 1 and event.item_id == message.id for event in added)  # type: ignore[union-attr]
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text == final.output_text and final.output_text

    stored = await client.responses.retrieve(final.id)
    assert stored.model_dump(exclude={"usage"}) == final.model_dump(exclude={"usage"})


async def test_a_later_response_reads_the_earlier_search_again(search_oasis: Harness) -> None:
    client = search_oasis.sdk()
    _newer_sdk(client)
    store_id, _ = await completed_store(search_oasis, FILES)
    first = await client.responses.create(
        model=MODEL,
        input=QUESTION,
        tools=[_tool(store_id)],
        tool_choice=FORCED,
        include=["file_search_call.results"],
        temperature=0,
        max_output_tokens=ANSWER_BUDGET,
    )
    follow = "Say that again in other words."
    later = await client.responses.create(
        model=MODEL, input=follow, previous_response_id=first.id, temperature=0, max_output_tokens=20
    )
    alone = await client.responses.create(model=MODEL, input=follow, temperature=0, max_output_tokens=20)
    assert later.usage is not None and alone.usage is not None
    # The earlier search's passages are in the later prompt (four files' passages: hundreds of tokens).
    assert later.usage.input_tokens > alone.usage.input_tokens + 150

    # The same conversation kept by the client: the earlier output items sent back as input.
    resent = await client.responses.create(
        model=MODEL,
        input=[
            {"role": "user", "content": QUESTION},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"role": "user", "content": follow},
        ],
        temperature=0,
        max_output_tokens=20,
    )
    assert resent.usage is not None and resent.usage.input_tokens > alone.usage.input_tokens + 150


async def test_the_tools_settings_bound_and_filter_the_results(search_oasis: Harness) -> None:
    client = search_oasis.sdk()
    _newer_sdk(client)
    store_id, ids = await completed_store(search_oasis, FILES)

    async def results(**settings: Any) -> list[Any]:
        response = await client.responses.create(
            model=MODEL,
            input=QUESTION,
            tools=[_tool(store_id, **settings)],
            tool_choice=FORCED,
            include=["file_search_call.results"],
            temperature=0,
            max_output_tokens=ANSWER_BUDGET,
        )
        assert response.output[0].type == "file_search_call"
        return list(response.output[0].results or [])

    assert len(await results(max_num_results=2)) == 2
    # The unrelated files score under the threshold: only the bees file is left.
    kept = await results(ranking_options={"ranker": "auto", "score_threshold": 0.75})
    assert {result.file_id for result in kept} == {ids["bees.html"]}

    # Filters on the files' attributes narrow what is searched.
    await stores(client).files.update(ids["coffee.md"], vector_store_id=store_id, attributes={"topic": "drinks"})
    filtered = await results(filters={"type": "eq", "key": "topic", "value": "drinks"})
    assert [result.file_id for result in filtered] == [ids["coffee.md"]]
    assert filtered[0].attributes == {"topic": "drinks"}


async def test_bad_search_tools_are_refused_before_anything_is_generated(search_oasis: Harness) -> None:
    store_id, _ = await completed_store(search_oasis, {"bees.html": FILES["bees.html"]})
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"tools": [{"type": "file_search"}]}, 400, "tools[0].vector_store_ids"),
        ({"tools": [{"type": "file_search", "vector_store_ids": []}]}, 400, "tools[0].vector_store_ids"),
        ({"tools": [{"type": "function", "name": "f"}, _tool("vs_missing")]}, 404, "tools[1].vector_store_ids"),
        ({"tools": [_tool(store_id, max_num_results=0)]}, 400, "tools[0].max_num_results"),
        ({"tools": [_tool(store_id, max_num_results=51)]}, 400, "tools[0].max_num_results"),
        (
            {"tools": [_tool(store_id, ranking_options={"score_threshold": 2})]},
            400,
            "tools[0].ranking_options.score_threshold",
        ),
        ({"tools": [_tool(store_id), _tool(store_id)]}, 400, "tools[1]"),
        ({"tools": [_tool(store_id), {"type": "function", "name": "file_search"}]}, 400, "tools[1].name"),
        ({"tool_choice": {"type": "file_search"}}, 400, "tool_choice"),
    ]
    async with search_oasis.http() as http:
        for body, status, param in cases:
            reply = await http.post("/v1/responses", json={"model": MODEL, "input": QUESTION, **body})
            assert reply.status_code == status, (body, reply.text)
            error = reply.json()["error"]
            assert error["param"] == param and error["message"], body
            assert error["type"] == "invalid_request_error"
        listed = await http.get("/v1/vector_stores")
    assert [store["id"] for store in listed.json()["data"]] == [store_id]  # nothing was made or lost


async def test_a_plain_request_searches_as_the_may_2024_sdk_would_send_it(search_oasis: Harness) -> None:
    """Without `client.responses` (the May-2024 SDK), a program posts the request itself."""
    store_id, ids = await completed_store(search_oasis, FILES)
    async with search_oasis.http() as http:
        reply = await http.post(
            "/v1/responses",
            json={
                "model": MODEL,
                "input": QUESTION,
                "tools": [_tool(store_id, max_num_results=3)],
                "tool_choice": "required",
                "include": ["file_search_call.results"],
                "temperature": 0,
                "max_output_tokens": ANSWER_BUDGET,
            },
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    search = body["output"][0]
    assert search["type"] == "file_search_call" and search["status"] == "completed"
    assert search["results"][0]["file_id"] == ids["bees.html"] and len(search["results"]) == 3
    assert body["output"][-1]["type"] == "message"


async def test_a_search_that_finds_nothing_still_answers(search_oasis: Harness) -> None:
    client: openai.AsyncOpenAI = search_oasis.sdk()
    _newer_sdk(client)
    store_id, _ = await completed_store(search_oasis, {"tax.txt": FILES["tax.txt"]})
    response = await client.responses.create(
        model=MODEL,
        input=QUESTION,
        tools=[_tool(store_id, ranking_options={"score_threshold": 1.0})],
        tool_choice=FORCED,
        include=["file_search_call.results"],
        temperature=0,
        max_output_tokens=ANSWER_BUDGET,
    )
    _answered(response)
    search, message = response.output
    assert search.type == "file_search_call" and search.status == "completed" and search.results == []
    assert message.type == "message" and response.output_text
    assert message.content[0].annotations == []  # type: ignore[union-attr]


class _Searcher(ScriptedChat):
    """A model upstream that calls file_search (its query in pieces, as OpenAI's models stream arguments), and
    given the results answers in two sentences that draw on the bees file; it records what it is sent."""

    received: list[dict[str, Any]] | None = []
    usage = {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50}
    also_calls: dict[str, Any] | None = None  # a function call it makes beside the search

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        if body["messages"][-1]["role"] == "tool":
            return [
                {"role": "assistant", "content": "The queen lays up to two thousand "},
                {"content": "eggs a day. Worker bees dance "},
                {"content": "to show the hive where nectar-rich flowers are."},
            ], "stop"
        opening = {"index": 0, "id": "call_s", "type": "function", "function": {"name": "file_search", "arguments": ""}}
        deltas = [
            {"role": "assistant", "tool_calls": [opening]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"query": "queen '}}]},
            {"tool_calls": [{"index": 0, "function": {"arguments": 'bee eggs"}'}}]},
        ]
        if self.also_calls is not None:
            deltas.append({"tool_calls": [{"index": 1, **self.also_calls}]})
        return deltas, "tool_calls"


@pytest.fixture
async def searcher_oasis(start_oasis: Callable[..., Any]) -> AsyncIterator[Harness]:
    _Searcher.received = []
    _Searcher.also_calls = None
    async with upstream_oasis(start_oasis, _Searcher, E5) as harness:
        yield harness


FIRST_SENTENCE = "The queen lays up to two thousand eggs a day."


async def test_an_upstream_models_search_is_run_here_and_its_answer_reads_the_results(
    searcher_oasis: Harness,
) -> None:
    client = searcher_oasis.sdk()
    _newer_sdk(client)
    store_id, ids = await completed_store(searcher_oasis, FILES)
    async with client.responses.stream(
        model="remote", input=QUESTION, tools=[_tool(store_id, max_num_results=2)], tool_choice="auto"
    ) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    search, message = final.output
    assert search.type == "file_search_call" and search.queries == ["queen bee eggs", QUESTION]
    assert search.results is None  # not included
    assert message.type == "message" and final.output_text == (
        f"{FIRST_SENTENCE} Worker bees dance to show the hive where nectar-rich flowers are."
    )
    # Both sentences draw on the bees file: cited at their ends.
    (part,) = message.content
    assert [(note.file_id, note.filename, note.index) for note in part.annotations] == [  # type: ignore[union-attr]
        (ids["bees.html"], "bees.html", len(FIRST_SENTENCE)),
        (ids["bees.html"], "bees.html", len(final.output_text)),
    ]
    assert final.usage is not None and final.usage.input_tokens == 80 and final.usage.output_tokens == 20

    kinds = [event.type for event in events]
    assert kinds[2:7] == [
        "response.output_item.added",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.output_item.done",
    ]
    assert "response.function_call_arguments.delta" not in kinds  # the search's call is the server's own
    assert kinds.count("response.output_text.annotation.added") == 2
    assert kinds[-1] == "response.completed"

    # What the model upstream was sent: the tool offered as a function, then the call and what it found.
    asked, answered = _Searcher.received or []
    assert [tool["function"]["name"] for tool in asked["tools"]] == ["file_search"] and asked["tool_choice"] == "auto"
    assert "tools" not in answered and "tool_choice" not in answered  # searched its most: answers now
    # Nothing the client left out is added for the answer (an upstream keeps its own sampling defaults).
    assert set(answered) - set(asked) <= {"stream_options"}, set(answered) - set(asked)
    assert not {"temperature", "top_p", "n", "presence_penalty", "frequency_penalty"} & set(answered)
    call_message, results_message = answered["messages"][-2:]
    assert call_message["role"] == "assistant"
    assert [call["function"]["name"] for call in call_message["tool_calls"]] == ["file_search"]
    assert results_message["role"] == "tool" and results_message["tool_call_id"] == call_message["tool_calls"][0]["id"]
    assert results_message["content"].startswith("[bees.html]\n") and "two thousand eggs" in results_message["content"]
    assert results_message["content"].count("\n\n[") == 1  # max_num_results: two results shown


async def test_a_search_beside_a_function_call_waits_for_the_functions_output(searcher_oasis: Harness) -> None:
    """The model calls file_search and the client's function at once: the search runs, and the response ends with
    the function call for the client; its output, sent with previous_response_id, comes after the search's
    results in what the model reads next."""
    client = searcher_oasis.sdk()
    _newer_sdk(client)
    store_id, _ = await completed_store(searcher_oasis, {"bees.html": FILES["bees.html"]})
    _Searcher.also_calls = {
        "id": "call_f",
        "type": "function",
        "function": {"name": "hive_count", "arguments": "{}"},
    }
    function = {"type": "function", "name": "hive_count", "parameters": {"type": "object", "properties": {}}}
    first = await client.responses.create(
        model="remote",
        input=QUESTION,
        tools=[_tool(store_id), function],  # type: ignore[list-item]
    )
    assert [item.type for item in first.output] == ["function_call", "file_search_call"]
    call = first.output[0]
    assert call.call_id == "call_f" and call.name == "hive_count"  # type: ignore[union-attr]
    assert len(_Searcher.received or []) == 1  # nothing asked again before the client answers

    _Searcher.also_calls = None
    second = await client.responses.create(
        model="remote",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": "call_f", "output": "3 hives"}],
        tools=[_tool(store_id), function],  # type: ignore[list-item]
    )
    assert second.output_text.startswith(FIRST_SENTENCE)
    # What the model read the second time: the question, its two calls, the search's results, the function's output
    user, calls, found, output = (_Searcher.received or [])[1]["messages"]
    assert user == {"role": "user", "content": QUESTION}
    assert {call["id"] for call in calls["tool_calls"]} == {"call_f", first.output[1].id}
    assert found["role"] == "tool" and found["tool_call_id"] == first.output[1].id
    assert "two thousand eggs" in found["content"]
    assert output == {"role": "tool", "tool_call_id": "call_f", "content": "3 hives"}


async def test_a_conversation_keeps_what_a_search_found_for_later_responses(searcher_oasis: Harness) -> None:
    client = searcher_oasis.sdk()
    _newer_sdk(client)
    if not hasattr(client, "conversations"):
        pytest.skip("this SDK has no Conversations API")
    store_id, ids = await completed_store(searcher_oasis, {"bees.html": FILES["bees.html"]})
    conversation = await client.conversations.create()
    first = await client.responses.create(
        model="remote", conversation=conversation.id, input=QUESTION, tools=[_tool(store_id)]
    )
    assert first.output[0].type == "file_search_call" and first.output[0].results is None
    listed = (await client.conversations.items.list(conversation.id, order="asc")).data
    assert [item.type for item in listed] == ["message", "file_search_call", "message"]
    assert listed[1].results is None  # type: ignore[union-attr]
    shown = await client.conversations.items.list(conversation.id, order="asc", include=["file_search_call.results"])
    (result,) = shown.data[1].results  # type: ignore[union-attr]
    assert result.file_id == ids["bees.html"] and "two thousand eggs" in result.text
    one = await client.conversations.items.retrieve(
        listed[1].id, conversation_id=conversation.id, include=["file_search_call.results"]
    )
    assert one.model_dump() == shown.data[1].model_dump()

    # The next response in the conversation reads the search and what it found (the client never saw it).
    await client.responses.create(model="remote", conversation=conversation.id, input="Thanks.")
    latest = (_Searcher.received or [])[-1]["messages"]
    assert [message["role"] for message in latest] == ["user", "assistant", "tool", "assistant", "user"]
    assert latest[1]["tool_calls"][0]["id"] == latest[2]["tool_call_id"] == listed[1].id
    assert "two thousand eggs" in latest[2]["content"]
    assert latest[3]["content"] == [{"type": "text", "text": first.output_text}]
