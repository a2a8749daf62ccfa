"""Conversations of the Responses API (after the 2.0.0 spec) through newer SDKs' `client.conversations` (create,
retrieve, update, delete, items create, list, retrieve, delete) and responses that name one, on the real llama.cpp
engine and the shipped SmolLM2 model; as plain requests where the May-2024 SDK would send them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.conftest import Harness, smollm

MODEL = "gpt-4o-mini"
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "purple", "orange", "grey", "brown", "pink", "gold"]


def _has_conversations(client: openai.AsyncOpenAI) -> None:
    if not hasattr(client, "conversations"):
        pytest.skip("this SDK has no Conversations API")


def _texts(items: Any) -> list[str]:
    return [part.text for item in items for part in item.content]


async def test_a_conversation_and_its_items_are_made_read_changed_and_deleted(oasis: Harness) -> None:
    client = oasis.sdk()
    _has_conversations(client)
    made = await client.conversations.create(
        items=[
            {"type": "message", "role": "user", "content": "Hello."},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi!"}]},
        ],
        metadata={"topic": "greeting"},
    )
    assert made.id.startswith("conv_") and made.object == "conversation" and made.metadata == {"topic": "greeting"}
    assert made.created_at > 0
    again = await client.conversations.retrieve(made.id)
    assert again.model_dump() == made.model_dump()

    listed = await client.conversations.items.list(made.id)  # newest first
    assert _texts(listed.data) == ["Hi!", "Hello."]
    first, second = listed.data[::-1]
    assert first.type == "message" and first.role == "user" and first.id.startswith("msg_")  # type: ignore[union-attr]
    assert first.content[0].type == "input_text" and first.status == "completed"  # type: ignore[union-attr]
    assert second.content[0].type == "output_text"  # type: ignore[union-attr]

    added = await client.conversations.items.create(
        made.id,
        include=["file_search_call.results"],
        items=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "One."}]},
            {"type": "message", "role": "user", "content": "Two."},
        ],
    )
    assert _texts(added.data) == ["One.", "Two."] and added.first_id == added.data[0].id
    oldest_first = await client.conversations.items.list(made.id, order="asc", limit=2)
    assert _texts(oldest_first.data) == ["Hello.", "Hi!"] and oldest_first.has_more
    rest = await client.conversations.items.list(made.id, order="asc", after=oldest_first.data[-1].id)
    assert _texts(rest.data) == ["One.", "Two."] and not rest.has_more

    one = await client.conversations.items.retrieve(added.data[0].id, conversation_id=made.id)
    assert one.model_dump() == added.data[0].model_dump()
    after_delete = await client.conversations.items.delete(added.data[0].id, conversation_id=made.id)
    assert after_delete.id == made.id and after_delete.object == "conversation"
    assert _texts((await client.conversations.items.list(made.id, order="asc")).data) == ["Hello.", "Hi!", "Two."]
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.retrieve(added.data[0].id, conversation_id=made.id)

    changed = await client.conversations.update(made.id, metadata={"topic": "numbers"})
    assert changed.metadata == {"topic": "numbers"}
    assert (await client.conversations.retrieve(made.id)).metadata == {"topic": "numbers"}

    gone = await client.conversations.delete(made.id)
    assert gone.id == made.id and gone.deleted and gone.object == "conversation.deleted"
    for read in (client.conversations.retrieve(made.id), client.conversations.items.list(made.id)):
        with pytest.raises(openai.NotFoundError):
            await read


async def test_responses_in_a_conversation_read_it_and_add_their_items(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _has_conversations(client)
    conversation = await client.conversations.create(metadata={"user": "ada"})
    first = await client.responses.create(
        model=MODEL, conversation=conversation.id, input="My name is Ada.", max_output_tokens=16, temperature=0
    )
    assert first.conversation is not None and first.conversation.id == conversation.id
    items = (await client.conversations.items.list(conversation.id, order="asc")).data
    assert [item.type for item in items] == ["message", "message"]
    assert items[0].role == "user" and _texts(items[:1]) == ["My name is Ada."]  # type: ignore[union-attr]
    assert items[1].role == "assistant" and items[1].id == first.output[0].id  # type: ignore[union-attr]
    assert _texts(items[1:]) == [first.output_text]

    # A streamed response in the same conversation reads the earlier turn and adds its own.
    question = "What is my name?"
    stream = await client.responses.create(
        model=MODEL,
        conversation={"id": conversation.id},
        input=question,
        max_output_tokens=16,
        temperature=0,
        stream=True,
    )
    events = [event async for event in stream]
    second = events[-1].response  # type: ignore[union-attr]
    alone = await client.responses.create(model=MODEL, input=question, max_output_tokens=16, temperature=0)
    assert second.usage is not None and alone.usage is not None
    carried = second.usage.input_tokens - alone.usage.input_tokens
    assert carried >= 5 + first.usage.output_tokens  # type: ignore[union-attr]
    items = (await client.conversations.items.list(conversation.id, order="asc")).data
    assert len(items) == 4 and _texts(items[2:3]) == [question] and _texts(items[3:]) == [second.output_text]

    # The next response reads exactly the conversation's items: the same prompt as those items sent as input.
    # Deleting an item takes it out of what that response reads.
    await client.conversations.items.delete(items[1].id, conversation_id=conversation.id)
    kept = (await client.conversations.items.list(conversation.id, order="asc")).data
    assert len(kept) == 3
    in_conversation = await client.responses.create(
        model=MODEL, conversation=conversation.id, input="Thanks.", max_output_tokens=1, temperature=0
    )
    sent = [item.model_dump(exclude_none=True) for item in kept]
    explicit = await client.responses.create(
        model=MODEL, input=[*sent, {"role": "user", "content": "Thanks."}], max_output_tokens=1, temperature=0
    )
    assert in_conversation.usage is not None and explicit.usage is not None
    assert in_conversation.usage.input_tokens == explicit.usage.input_tokens
    assert explicit.conversation is None


async def test_bad_conversation_requests_are_refused_and_change_nothing(chat_oasis: Harness) -> None:
    """As plain requests (what the May-2024 SDK, without `client.conversations`, would send)."""
    async with chat_oasis.http() as http:
        made = await http.post("/v1/conversations", json={"items": [{"role": "user", "content": "Hello."}]})
        assert made.status_code == 200, made.text
        conversation_id = made.json()["id"]
        cases: list[tuple[str, str, dict[str, Any], int, str]] = [
            ("POST", "/v1/conversations", {"items": [{"type": "web_search_call"}]}, 400, "items[0].type"),
            ("POST", "/v1/conversations", {"items": [{"role": "user"}] * 21}, 400, "items"),
            ("POST", "/v1/conversations", {"metadata": {f"k{i}": "v" for i in range(17)}}, 400, "metadata"),
            ("POST", f"/v1/conversations/{conversation_id}/items", {"items": []}, 400, "items"),
            (
                "POST",
                f"/v1/conversations/{conversation_id}/items",
                {"items": [{"role": "robot"}]},
                400,
                "items[0].role",
            ),
            (
                "POST",
                "/v1/conversations/conv_missing/items",
                {"items": [{"role": "user", "content": "x"}]},
                404,
                "conversation_id",
            ),
            ("GET", "/v1/conversations/conv_missing", {}, 404, "conversation_id"),
            ("GET", f"/v1/conversations/{conversation_id}/items/msg_missing", {}, 404, "item_id"),
            ("DELETE", f"/v1/conversations/{conversation_id}/items/msg_missing", {}, 404, "item_id"),
            ("GET", f"/v1/conversations/{conversation_id}/items?include[]=nothing", {}, 400, "include"),
            ("GET", f"/v1/conversations/{conversation_id}/items?after=msg_missing", {}, 400, "after"),
            (
                "POST",
                "/v1/responses",
                {"model": MODEL, "input": "hi", "conversation": conversation_id, "previous_response_id": "resp_x"},
                400,
                "previous_response_id",
            ),
            (
                "POST",
                "/v1/responses",
                {"model": MODEL, "input": "hi", "conversation": "conv_missing"},
                404,
                "conversation",
            ),
            (
                "POST",
                "/v1/responses",
                {"model": MODEL, "input": "hi", "conversation": {"name": "x"}},
                400,
                "conversation",
            ),
            (
                "POST",
                "/v1/responses",
                {"model": MODEL, "input": [{"type": "nothing"}], "conversation": conversation_id},
                400,
                "input[0].type",
            ),
        ]
        for method, path, body, status, param in cases:
            reply = await http.request(method, path, json=body or None)
            assert reply.status_code == status, (path, body, reply.text)
            error = reply.json()["error"]
            assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error", path
        items = await http.get(f"/v1/conversations/{conversation_id}/items")
    assert [item["content"] for item in items.json()["data"]] == [[{"type": "input_text", "text": "Hello."}]]


@pytest.fixture
async def small_context_oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(context_length=256, parallel=1)])
    return harness


async def test_truncation_auto_drops_the_oldest_turns_until_the_conversation_fits(
    small_context_oasis: Harness,
) -> None:
    client = small_context_oasis.sdk()
    _has_conversations(client)
    facts = [f"Fact {number}: the {colour} box holds {number} marbles." for number, colour in enumerate(COLOURS)]
    turns = [
        item
        for fact in facts
        for item in (
            {"type": "message", "role": "user", "content": fact},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Noted."}]},
        )
    ]
    conversation = await client.conversations.create(items=turns[:20])
    await client.conversations.items.create(conversation.id, items=turns[20:])
    ask: dict[str, Any] = {
        "model": MODEL,
        "conversation": conversation.id,
        "instructions": "You count marbles.",
        "input": "How many marbles in all?",
        "max_output_tokens": 16,
        "temperature": 0,
    }
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.create(**ask)
    assert refused.value.code == "context_length_exceeded"

    response = await client.responses.create(**ask, truncation="auto")
    assert response.truncation == "auto" and response.usage is not None
    used = response.usage.input_tokens + 16
    assert used <= 256
    # As few turns dropped as the context needs, from the oldest: the same prompt as the newest `kept` turns sent
    # explicitly, one more of which would not fit.
    for kept in range(1, len(facts) + 1):
        explicit = await client.responses.create(
            model=MODEL,
            instructions="You count marbles.",
            input=[*turns[-2 * kept :], {"role": "user", "content": "How many marbles in all?"}],
            max_output_tokens=1,
        )
        assert explicit.usage is not None
        if explicit.usage.input_tokens == response.usage.input_tokens:
            break
    else:
        raise AssertionError("the truncated prompt is not the newest turns")
    assert kept < len(facts)
    one_more = [*turns[-2 * (kept + 1) :], {"role": "user", "content": "How many marbles in all?"}]
    with pytest.raises(openai.BadRequestError):
        await client.responses.create(
            model=MODEL, instructions="You count marbles.", input=one_more, max_output_tokens=16
        )
    # The conversation itself keeps every item.
    items = await client.conversations.items.list(conversation.id, limit=100)
    assert len(items.data) == len(turns) + 2
    # Continued without new input, the newest user message stays (the answer to it is what is asked for).
    again = await client.responses.create(
        model=MODEL, conversation=conversation.id, truncation="auto", max_output_tokens=16, temperature=0
    )
    assert again.status in ("completed", "incomplete") and again.usage is not None
    assert 0 < again.usage.input_tokens <= 256 - 16
