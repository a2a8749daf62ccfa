"""Assistants, threads and messages through the official SDK: every field stored and returned, OpenAI's limits
as 400s naming the field, lists that page, and objects invisible from another project."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import Harness

MODEL = "gpt-4o-mini"
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def test_assistant_round_trip(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    made = await client.beta.assistants.create(
        model=MODEL,
        name="Weather bot",
        description="Tells the weather",
        instructions="You answer questions about the weather.",
        tools=[WEATHER_TOOL, {"type": "code_interpreter"}],
        metadata={"team": "blue"},
        temperature=0.2,
        top_p=0.9,
        response_format="auto",
    )
    assert made.id.startswith("asst_") and made.object == "assistant"
    assert (made.name, made.description, made.model) == ("Weather bot", "Tells the weather", MODEL)
    assert made.tools[0].type == "function" and made.tools[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert made.tools[1].type == "code_interpreter"
    assert made.metadata == {"team": "blue"} and made.temperature == 0.2 and made.top_p == 0.9
    assert made.response_format == "auto"

    fetched = await client.beta.assistants.retrieve(made.id)
    assert fetched.model_dump() == made.model_dump()

    changed = await client.beta.assistants.update(made.id, name="Renamed", tools=[], metadata={"team": "red"})
    assert changed.name == "Renamed" and changed.tools == [] and changed.metadata == {"team": "red"}
    assert changed.instructions == "You answer questions about the weather."  # untouched fields stay

    deleted = await client.beta.assistants.delete(made.id)
    assert deleted.deleted and deleted.id == made.id
    with pytest.raises(openai.NotFoundError):
        await client.beta.assistants.retrieve(made.id)


async def test_assistant_defaults_match_openai(chat_oasis: Harness) -> None:
    made = await chat_oasis.sdk().beta.assistants.create(model=MODEL)
    assert made.name is None and made.instructions is None and made.tools == [] and made.metadata == {}
    assert made.temperature == 1.0 and made.top_p == 1.0 and made.response_format == "auto"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"name": "n" * 257}, "name"),
        ({"description": "d" * 513}, "description"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"tools": [WEATHER_TOOL] * 129}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER_TOOL, WEATHER_TOOL]}, "tools[1]"),
        ({"tools": [{"type": "browser"}]}, "tools[0]"),
        (
            {"tool_resources": {"code_interpreter": {"file_ids": [f"file-{i}" for i in range(21)]}}},
            "tool_resources.code_interpreter.file_ids",
        ),
        (
            {"tool_resources": {"file_search": {"vector_store_ids": ["vs_a", "vs_b"]}}},
            "tool_resources.file_search.vector_store_ids",
        ),
    ],
)
async def test_assistant_limits_are_400s_naming_the_field(
    chat_oasis: Harness, fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await chat_oasis.sdk().beta.assistants.create(model=MODEL, **fields)
    assert caught.value.status_code == 400
    assert caught.value.param == param


async def test_an_unknown_model_is_a_400_and_missing_resources_are_404s(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    with pytest.raises(openai.BadRequestError) as caught:  # as OpenAI's Assistants answer it
        await client.beta.assistants.create(model="no-such-model")
    assert (caught.value.param, caught.value.code) == ("model", "model_not_found")
    assert "no-such-model" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:  # a fine-tune name that names none: the same answer
        await client.beta.assistants.create(model="ft:gpt-4o-mini:proj_default:nope:ftjob-none")
    assert caught.value.code == "model_not_found"
    made = await client.beta.assistants.create(model=MODEL)
    with pytest.raises(openai.BadRequestError):
        await client.beta.assistants.update(made.id, model="no-such-model")
    thread = await client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.runs.create(thread.id, assistant_id=made.id, model="no-such-model")
    assert caught.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        await client.beta.assistants.create(
            model=MODEL, tool_resources={"file_search": {"vector_store_ids": ["vs_missing"]}}
        )
    with pytest.raises(openai.NotFoundError):
        await client.beta.assistants.create(
            model=MODEL, tool_resources={"code_interpreter": {"file_ids": ["file-missing"]}}
        )


async def test_tool_resources_keep_files_and_make_a_store_from_files(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    uploaded = await client.files.create(file=("notes.txt", b"The office cat is called Miso."), purpose="assistants")
    made = await client.beta.assistants.create(
        model=MODEL,
        tools=[{"type": "file_search"}, {"type": "code_interpreter"}],
        tool_resources={
            "code_interpreter": {"file_ids": [uploaded.id]},
            "file_search": {"vector_stores": [{"file_ids": [uploaded.id]}]},
        },
    )
    assert made.tool_resources is not None
    assert made.tool_resources.code_interpreter.file_ids == [uploaded.id]  # type: ignore[union-attr]
    (store_id,) = made.tool_resources.file_search.vector_store_ids  # type: ignore[union-attr]
    stores = client.beta.vector_stores if hasattr(client.beta, "vector_stores") else client.vector_stores  # type: ignore[attr-defined]
    assert (
        await stores.retrieve(store_id)
    ).expires_after is None  # a thread's helper store expires; an assistant's not
    thread = await client.beta.threads.create(
        tool_resources={"file_search": {"vector_stores": [{"file_ids": [uploaded.id]}]}}
    )
    (thread_store_id,) = thread.tool_resources.file_search.vector_store_ids  # type: ignore[union-attr]
    helper = {"file_ids": [uploaded.id], "metadata": {"k": "x" * 513}}
    with pytest.raises(openai.BadRequestError) as caught:  # named where it is in the body, not as the thread's own
        await client.beta.threads.create(tool_resources={"file_search": {"vector_stores": [helper]}})
    assert caught.value.param == "tool_resources.file_search.vector_stores[0].metadata.k"
    expiry = (await stores.retrieve(thread_store_id)).expires_after
    assert expiry is not None and (expiry.anchor, expiry.days) == ("last_active_at", 7)
    files = (
        await client.beta.vector_stores.files.list(store_id)
        if hasattr(client.beta, "vector_stores")
        else (
            await client.vector_stores.files.list(store_id)  # type: ignore[attr-defined]
        )
    )
    assert [item.id for item in files.data] == [uploaded.id]


async def test_assistants_list_pages_like_every_list(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    made = [(await client.beta.assistants.create(model=MODEL, name=f"a{i}")).id for i in range(5)]
    first = await client.beta.assistants.list(limit=2, order="asc")
    assert [item.id for item in first.data] == made[:2] and first.has_more
    seen = [item.id async for item in client.beta.assistants.list(limit=2, order="asc")]
    assert seen == made
    newest = await client.beta.assistants.list(limit=1)
    assert newest.data[0].id == made[-1]


async def test_threads_and_messages(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    thread = await client.beta.threads.create(
        messages=[
            {"role": "user", "content": "Hello there", "metadata": {"n": "1"}},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi! How can I help?"}]},
        ],
        metadata={"user": "ada"},
    )
    assert thread.id.startswith("thread_") and thread.metadata == {"user": "ada"}
    listed = await client.beta.threads.messages.list(thread.id, order="asc")
    assert [message.role for message in listed.data] == ["user", "assistant"]
    first = listed.data[0]
    assert first.content[0].type == "text" and first.content[0].text.value == "Hello there"  # type: ignore[union-attr]
    assert first.content[0].text.annotations == []  # type: ignore[union-attr]
    assert first.metadata == {"n": "1"} and first.status == "completed" and first.thread_id == thread.id
    assert first.assistant_id is None and first.run_id is None and first.attachments == []

    added = await client.beta.threads.messages.create(thread.id, role="user", content="And the weather?")
    assert (await client.beta.threads.messages.retrieve(added.id, thread_id=thread.id)).id == added.id
    changed = await client.beta.threads.messages.update(added.id, thread_id=thread.id, metadata={"seen": "yes"})
    assert changed.metadata == {"seen": "yes"}
    assert (await client.beta.threads.messages.list(thread.id, limit=1)).data[0].id == added.id  # newest first
    gone = await client.beta.threads.messages.delete(added.id, thread_id=thread.id)
    assert gone.deleted and gone.object == "thread.message.deleted"

    modified = await client.beta.threads.update(thread.id, metadata={"user": "grace"})
    assert modified.metadata == {"user": "grace"}
    assert (await client.beta.threads.delete(thread.id)).deleted
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.retrieve(thread.id)
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.messages.list(thread.id)


async def test_message_checks(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    thread = await client.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.messages.create(thread.id, role="system", content="no")  # type: ignore[arg-type]
    assert caught.value.param == "role"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.beta.threads.messages.create(
            thread.id, role="user", content="see file", attachments=[{"file_id": "file-nope", "tools": []}]
        )
    assert missing.value.param == "attachments"
    with pytest.raises(openai.NotFoundError):
        await client.beta.threads.messages.create("thread_missing", role="user", content="hi")
    with pytest.raises(openai.BadRequestError) as caught:
        await client.beta.threads.messages.create(thread.id, role="user", content="hi", metadata={"k": "v" * 513})
    assert caught.value.param == "metadata.k"  # not "content.metadata.k"
    # The spec's content is 1 to 256,000 characters; text parts are held to the same total.
    for content in ("", "x" * 256_001, [{"type": "text", "text": "x" * 128_001}] * 2):
        with pytest.raises(openai.BadRequestError) as caught:
            await client.beta.threads.messages.create(thread.id, role="user", content=content)  # type: ignore[arg-type]
        assert caught.value.param is not None and caught.value.param.startswith("content"), caught.value.param
    parts = [{"type": "text", "text": "x" * 128_000}] * 2
    await client.beta.threads.messages.create(thread.id, role="user", content=parts)  # type: ignore[arg-type]
    assert len((await client.beta.threads.messages.list(thread.id)).data) == 1


async def test_a_file_of_a_type_file_search_cannot_read_is_refused_as_its_attachment(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    picture = await client.files.create(file=("chart.png", b"\x89PNG\r\n\x1a\n"), purpose="assistants")
    notes = await client.files.create(file=("notes.md", b"# Notes"), purpose="assistants")
    thread = await client.beta.threads.create()
    searched = [
        {"file_id": notes.id, "tools": [{"type": "file_search"}]},
        {"file_id": picture.id, "tools": [{"type": "file_search"}]},
    ]
    with pytest.raises(openai.BadRequestError) as refused:
        await client.beta.threads.messages.create(thread.id, role="user", content="see", attachments=searched)  # type: ignore[arg-type]
    assert refused.value.param == "attachments" and refused.value.code == "unsupported_file"
    assert ".png" in refused.value.message
    with pytest.raises(openai.BadRequestError) as refused:
        await client.beta.threads.create(messages=[{"role": "user", "content": "see", "attachments": searched}])  # type: ignore[list-item]
    assert refused.value.param == "messages[0].attachments" and refused.value.code == "unsupported_file"
    # Nothing was stored: no message, and the thread got no store for the notes either.
    assert (await client.beta.threads.messages.list(thread.id)).data == []
    assert (await client.beta.threads.retrieve(thread.id)).tool_resources.file_search is None
    # code_interpreter reads any file; file_search the notes.
    kept = await client.beta.threads.messages.create(
        thread.id,
        role="user",
        content="see",
        attachments=[searched[0], {"file_id": picture.id, "tools": [{"type": "code_interpreter"}]}],  # type: ignore[list-item]
    )
    assert [attachment.file_id for attachment in kept.attachments] == [notes.id, picture.id]


async def test_objects_are_invisible_from_another_project(chat_oasis: Harness) -> None:
    _, our_key = await chat_oasis.container.keys.create("ours")
    _, other_key = await chat_oasis.container.keys.create("theirs")
    ours, theirs = chat_oasis.sdk(api_key=our_key), chat_oasis.sdk(api_key=other_key)
    assistant = await ours.beta.assistants.create(model=MODEL)
    thread = await ours.beta.threads.create(messages=[{"role": "user", "content": "private"}])
    with pytest.raises(openai.NotFoundError):
        await theirs.beta.assistants.retrieve(assistant.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.beta.assistants.delete(assistant.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.beta.threads.retrieve(thread.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.beta.threads.messages.list(thread.id)
    with pytest.raises(openai.NotFoundError):
        await theirs.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
    assert (await theirs.beta.assistants.list()).data == []
