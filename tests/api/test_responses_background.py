"""Background responses (`background: true`) through the SDK's `client.responses`: created queued and polled to
the end, streamed and streamed again from a sequence number, cancelled while queued or mid-answer, deleted while
generated, and refused where they cannot be. On the real llama.cpp engine and the shipped SmolLM2 model."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest
from sqlalchemy import select, update

from oasis.storage.tables import ResponseEvent, StoredResponse
from tests.conftest import Harness

MODEL = "gpt-4o-mini"
STORY = "Write a very long story about a lighthouse keeper and the ships she saw, at least a thousand words."
FINAL = ("completed", "incomplete", "failed", "cancelled")


def _newer_sdk(client: openai.AsyncOpenAI) -> None:
    if not hasattr(client, "responses"):
        pytest.skip("this SDK has no Responses API")


async def _finished(client: openai.AsyncOpenAI, response_id: str, seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while (response := await client.responses.retrieve(response_id)).status not in FINAL:
        assert time.monotonic() < deadline, response.status
        await asyncio.sleep(0.1)
    return response


async def _events(harness: Harness, response_id: str) -> list[ResponseEvent]:
    async with harness.container.db.session() as session:
        found = await session.scalars(
            select(ResponseEvent).where(ResponseEvent.response_id == response_id).order_by(ResponseEvent.seq)
        )
        return list(found)


async def _until_text(harness: Harness, response_id: str, seconds: float = 60) -> None:
    """Waits until the response's answer has begun (a text delta is written)."""
    deadline = time.monotonic() + seconds
    while not any(event.event_json.count("output_text.delta") for event in await _events(harness, response_id)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def _job_columns(harness: Harness, response_id: str) -> tuple[str | None, str | None]:
    """The row's request as sent and checkpoint: what it holds only while it is a job."""
    async with harness.container.db.session() as session:
        row = await session.scalar(select(StoredResponse).where(StoredResponse.id == response_id))
    assert row is not None
    return row.request_json, row.checkpoint_json


async def test_a_background_response_is_queued_then_polled_to_its_answer(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    queued = await client.responses.create(
        model=MODEL, input="Name a colour.", background=True, max_output_tokens=16, metadata={"case": "bg"}
    )
    assert queued.status == "queued" and queued.background is True and queued.output == []
    assert queued.metadata == {"case": "bg"} and queued.store is True

    done = await _finished(client, queued.id)
    assert done.status in ("completed", "incomplete") and done.output_text
    assert done.id == queued.id and done.created_at == queued.created_at and done.background is True
    assert done.usage is not None and 1 <= done.usage.output_tokens <= 16
    items = await client.responses.input_items.list(done.id)
    assert [item.type for item in items.data] == ["message"]
    assert await _job_columns(chat_oasis, done.id) == (None, None)  # the request as sent is not kept past its job

    # it is continued like any stored response
    later = await client.responses.create(
        model=MODEL, input="And another?", previous_response_id=done.id, max_output_tokens=8
    )
    assert later.status in ("completed", "incomplete") and later.previous_response_id == done.id


async def test_a_background_stream_is_streamed_again_from_any_sequence_number(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    stream = await client.responses.create(
        model=MODEL, input="Say hello to the sea.", background=True, stream=True, max_output_tokens=24
    )
    events = [event async for event in stream]
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    created = events[0].response  # type: ignore[union-attr]
    assert created.status == "queued" and created.background is True
    final = events[-1].response  # type: ignore[union-attr]
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text and text == final.output_text

    # reconnecting after event n gives exactly the events after it, as they were sent the first time
    cut = len(events) // 2
    again = await client.responses.retrieve(created.id, stream=True, starting_after=cut)
    rest = [event async for event in again]
    assert [event.model_dump() for event in rest] == [event.model_dump() for event in events[cut + 1 :]]
    whole = [event async for event in await client.responses.retrieve(created.id, stream=True)]
    assert [event.sequence_number for event in whole] == list(range(len(events)))

    # a response made in the foreground was never kept as events: it cannot be streamed again
    plain = await client.responses.create(model=MODEL, input="Hi.", max_output_tokens=4)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.responses.retrieve(plain.id, stream=True)
    assert refused.value.body["param"] == "stream"  # type: ignore[index]


async def test_a_stream_follows_a_response_as_it_is_generated(chat_oasis: Harness) -> None:
    """A second client streams a response another one created, while it is generated: it gets every event."""
    client = chat_oasis.sdk()
    _newer_sdk(client)
    queued = await client.responses.create(model=MODEL, input=STORY, background=True, max_output_tokens=48)
    followed = [event async for event in await client.responses.retrieve(queued.id, stream=True)]
    assert [event.sequence_number for event in followed] == list(range(len(followed)))
    assert followed[-1].type in ("response.completed", "response.incomplete")
    text = "".join(event.delta for event in followed if event.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text == (await client.responses.retrieve(queued.id)).output_text


async def test_cancelling_mid_answer_stops_it_and_keeps_what_was_finished(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    queued = await client.responses.create(model=MODEL, input=STORY, background=True, max_output_tokens=600)

    async def follow() -> list[Any]:
        return [event async for event in await client.responses.retrieve(queued.id, stream=True)]

    following = asyncio.create_task(follow())
    await _until_text(chat_oasis, queued.id)
    cancelled = await client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.id == queued.id
    # a stream that followed it ends once the generation has stopped, with what was written until then
    followed = await asyncio.wait_for(following, timeout=30)
    assert followed[-1].type == "response.output_text.delta", [event.type for event in followed[-3:]]

    # the generation stops: no event is written after a moment, and the response stays cancelled
    await asyncio.sleep(1.0)
    written = len(await _events(chat_oasis, queued.id))
    await asyncio.sleep(1.0)
    assert len(await _events(chat_oasis, queued.id)) == written
    kept = await client.responses.retrieve(queued.id)
    assert kept.status == "cancelled" and kept.completed_at is None
    assert all(item.status == "completed" for item in kept.output)  # type: ignore[union-attr]
    # cancelling again is no error: the cancelled response comes back
    assert (await client.responses.cancel(queued.id)).status == "cancelled"
    # its stream ends where its generation stopped, without a last event
    streamed = [event async for event in await client.responses.retrieve(queued.id, stream=True)]
    assert streamed[0].type == "response.created" and streamed[-1].type not in ("response.completed",)

    # the engine is free for the next response at once
    after = await client.responses.create(model=MODEL, input="Say yes.", max_output_tokens=4)
    assert after.status in ("completed", "incomplete")


async def test_a_response_cancelled_while_queued_is_never_generated(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    chat_oasis.container.run_worker_loop.stop()  # no worker takes it
    await asyncio.sleep(0.2)
    queued = await client.responses.create(model=MODEL, input="Name a colour.", background=True)
    cancelled = await client.responses.cancel(queued.id)
    assert cancelled.status == "cancelled" and cancelled.output == []
    async with chat_oasis.container.db.session() as session:
        row = await session.scalar(select(StoredResponse).where(StoredResponse.id == queued.id))
    assert row is not None and row.status == "cancelled" and row.attempts == 0
    assert (row.request_json, row.checkpoint_json) == (None, None)
    # a foreground response cannot be cancelled; an unknown one is not found
    plain = await client.responses.create(model=MODEL, input="Hi.", max_output_tokens=4)
    with pytest.raises(openai.BadRequestError):
        await client.responses.cancel(plain.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.cancel("resp_missing")


async def test_deleting_a_response_being_generated_stops_it(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    queued = await client.responses.create(model=MODEL, input=STORY, background=True, max_output_tokens=600)
    await _until_text(chat_oasis, queued.id)
    await client.responses.delete(queued.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(queued.id)
    assert await _events(chat_oasis, queued.id) == []
    assert await _job_columns(chat_oasis, queued.id) == (None, None)
    await asyncio.sleep(1.0)
    assert await _events(chat_oasis, queued.id) == []  # nothing more was written


async def test_what_a_background_response_cannot_be(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    with pytest.raises(openai.BadRequestError) as unstored:
        await client.responses.create(model=MODEL, input="Hi.", background=True, store=False)
    assert unstored.value.body["param"] == "store"  # type: ignore[index]
    # a refusal a foreground response would get comes at once, before anything is queued
    with pytest.raises(openai.NotFoundError):
        await client.responses.create(model="no-such-model", input="Hi.", background=True)

    chat_oasis.container.run_worker_loop.stop()
    await asyncio.sleep(0.2)
    queued = await client.responses.create(model=MODEL, input="Name a colour.", background=True)
    with pytest.raises(openai.BadRequestError) as unfinished:
        await client.responses.create(model=MODEL, input="More.", previous_response_id=queued.id)
    assert unfinished.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert "still being generated" in unfinished.value.body["message"]  # type: ignore[index]


async def test_a_background_response_adds_its_items_to_its_conversation_once(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    if not hasattr(client, "conversations"):
        pytest.skip("this SDK has no Conversations API")
    conversation = await client.conversations.create()
    queued = await client.responses.create(
        model=MODEL, input="Name a fruit.", conversation=conversation.id, background=True, max_output_tokens=12
    )
    done = await _finished(client, queued.id)
    items = await client.conversations.items.list(conversation.id, order="asc")
    assert [item.type for item in items.data] == ["message", "message"]
    assert items.data[1].id == done.output[0].id  # type: ignore[union-attr]


async def test_a_generation_taken_over_tells_its_stream_and_starts_again(chat_oasis: Harness) -> None:
    """Another worker takes the response over (as after this one missed its renewals): this one stops writing,
    a stream that follows it ends with an `error` event, and the response is generated again from its start,
    its dead attempt's events replaced, once the other worker's lease lapses too."""
    client = chat_oasis.sdk()
    _newer_sdk(client)
    queued = await client.responses.create(model=MODEL, input=STORY, background=True, max_output_tokens=200)
    await _until_text(chat_oasis, queued.id)
    async with chat_oasis.container.db.session() as session:
        await session.execute(
            update(StoredResponse)
            .where(StoredResponse.id == queued.id)
            .values(lease_owner="another-worker", lease_expires_at=time.time() + 1.5)
        )
        await session.commit()
    # (the in-process transport hands the stream over whole once it has ended)
    kinds: list[str] = []
    with pytest.raises(openai.APIError) as told:  # the SDK raises the `error` event
        async for event in await client.responses.retrieve(queued.id, stream=True):
            kinds.append(event.type)
    assert "started again" in told.value.message
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds, kinds

    done = await _finished(client, queued.id)
    assert done.status in ("completed", "incomplete") and done.output_text
    again = [event async for event in await client.responses.retrieve(queued.id, stream=True)]
    # the creation's two events, then the new generation's, numbered after every number the first one used
    numbers = [event.sequence_number for event in again]
    assert numbers[:2] == [0, 1] and numbers[2] > 3
    assert numbers[2:] == list(range(numbers[2], numbers[2] + len(numbers) - 2))
    assert [event.type for event in again[1:3]] == ["response.queued", "response.in_progress"]
    # a client that reconnects after an event of the replaced generation is told to start again
    with pytest.raises(openai.APIError) as stale:
        async for _ in await client.responses.retrieve(queued.id, stream=True, starting_after=3):
            pass
    assert "started again" in stale.value.message
    text = "".join(event.delta for event in again if event.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text == done.output_text
    generations = {event.generation for event in await _events(chat_oasis, queued.id) if event.sequence_number >= 2}
    assert len(generations) == 1
