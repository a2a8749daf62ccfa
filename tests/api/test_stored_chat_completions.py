"""Stored chat completions (after the 2.0.0 spec): `store: true` keeps an answer, whole or streamed, for newer SDKs'
`client.chat.completions.list`, `retrieve`, `update`, `delete` and `messages.list`; plain requests (what the
May-2024 SDK can send) reach the same routes. On the real llama.cpp engine and the shipped SmolLM2 model."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import select

from oasis.protocol.extensions import ChatCompletionRequest
from oasis.storage.tables import StoredChatCompletion
from tests.conftest import Harness
from tests.scripted_upstream import ScriptedChat, upstream_oasis
from tests.server_process import oasis_env, oasis_server

MODEL = "gpt-4o-mini"
QUESTION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": [{"type": "text", "text": "Name a colour."}, {"type": "text", "text": "One word."}]},
]


def _newer_sdk(client: openai.AsyncOpenAI) -> None:
    if not hasattr(client.chat.completions, "retrieve"):
        pytest.skip("this SDK has no stored chat completions")


async def _stored(harness: Harness, **body: Any) -> dict[str, Any]:
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 6, "store": True, **body}
    async with harness.http() as http:
        response = await http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_a_stored_answer_is_read_back_as_it_was_given(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=6,
        temperature=0.3,
        seed=7,
        store=True,
        metadata={"team": "docs", "case": "colour"},
    )
    stored = await client.chat.completions.retrieve(reply.id)
    assert stored.id == reply.id and stored.model == MODEL and stored.created == reply.created
    assert stored.choices[0].message.content == reply.choices[0].message.content
    assert stored.choices[0].finish_reason == reply.choices[0].finish_reason
    assert stored.usage == reply.usage
    extra = stored.model_dump()
    assert extra["metadata"] == {"team": "docs", "case": "colour"}
    assert extra["temperature"] == 0.3 and extra["seed"] == 7 and extra["top_p"] == 1.0
    assert extra["request_id"].startswith("req_")

    messages = await client.chat.completions.messages.list(reply.id)
    assert [message.id for message in messages.data] == [f"{reply.id}-0", f"{reply.id}-1"]
    system, user = messages.data
    assert system.role == "system" and system.content == "You answer briefly." and system.content_parts is None
    assert user.content == "Name a colour.\nOne word."
    assert [part.model_dump()["text"] for part in user.content_parts or []] == ["Name a colour.", "One word."]


async def test_only_answers_asked_to_be_stored_are_listed(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    kept = await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4, store=True)
    unkept = await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4)
    listed = await client.chat.completions.list()
    assert [completion.id for completion in listed.data] == [kept.id]
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.retrieve(unkept.id)
    assert missing.value.body["param"] == "completion_id"


async def test_a_streamed_answer_is_stored_whole_with_its_usage(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=8,
        stream=True,
        store=True,
    )
    chunks = [chunk async for chunk in stream]
    said = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    # the client did not ask for usage: it hears none, though the stored answer has it
    assert all(chunk.choices and chunk.usage is None for chunk in chunks)
    stored = await client.chat.completions.retrieve(chunks[0].id)
    assert stored.object == "chat.completion" and stored.choices[0].message.content == said
    assert stored.choices[0].message.role == "assistant"
    assert stored.choices[0].finish_reason == chunks[-1].choices[0].finish_reason
    usage = stored.usage
    assert usage is not None and 1 <= usage.completion_tokens <= 8 and usage.prompt_tokens > 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    asked = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=5,
        stream=True,
        store=True,
        stream_options={"include_usage": True},
    )
    heard = [chunk async for chunk in asked]
    assert heard[-1].choices == [] and heard[-1].usage is not None
    again = await client.chat.completions.retrieve(heard[0].id)
    assert again.usage == heard[-1].usage


async def test_a_streamed_call_is_stored_as_the_call(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[weather],
        tool_choice="required",
        max_tokens=40,
        temperature=0,  # sampled, the arguments may run past max_tokens (CI saw a call cut at `length`)
        stream=True,
        store=True,
    )
    chunks = [chunk async for chunk in stream]
    heard: dict[int, dict[str, str]] = {}  # what the client put together, by index
    for chunk in chunks:
        for piece in chunk.choices[0].delta.tool_calls or []:
            call = heard.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = piece.id or call["id"]
            if piece.function is not None:
                call["name"] += piece.function.name or ""
                call["arguments"] += piece.function.arguments or ""
    stored = await client.chat.completions.retrieve(chunks[0].id)
    message = stored.choices[0].message
    assert stored.choices[0].finish_reason == "tool_calls" and message.content is None
    calls = message.tool_calls or []
    assert calls and [
        {"id": call.id, "name": call.function.name, "arguments": call.function.arguments} for call in calls
    ] == [heard[index] for index in sorted(heard)]
    assert all(call.type == "function" and call.function.name == "get_weather" for call in calls)
    assert "city" in json.loads(calls[0].function.arguments)


async def test_lists_filter_by_metadata_and_model_and_page(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    made = [
        await client.chat.completions.create(
            model=model,
            messages=QUESTION,
            max_tokens=2,
            store=True,
            metadata={"team": team, "n": str(position)},
        )
        for position, (model, team) in enumerate(
            [(MODEL, "docs"), ("gpt-3.5-turbo", "docs"), (MODEL, "ops"), (MODEL, "docs")]
        )
    ]
    ids = [reply.id for reply in made]
    everything = await client.chat.completions.list()
    assert [completion.id for completion in everything.data] == ids  # oldest first, as OpenAI lists them
    newest_first = await client.chat.completions.list(order="desc", limit=3)
    assert [completion.id for completion in newest_first.data] == ids[::-1][:3] and newest_first.has_more
    after = await client.chat.completions.list(after=ids[1], limit=1)
    assert [completion.id for completion in after.data] == [ids[2]] and after.has_more
    docs = await client.chat.completions.list(metadata={"team": "docs"})
    assert [completion.id for completion in docs.data] == [ids[0], ids[1], ids[3]]
    both = await client.chat.completions.list(metadata={"team": "docs", "n": "3"})
    assert [completion.id for completion in both.data] == [ids[3]]
    by_model = await client.chat.completions.list(model="gpt-3.5-turbo")
    assert [completion.id for completion in by_model.data] == [ids[1]]
    paged = [completion.id async for completion in client.chat.completions.list(limit=1)]
    assert paged == ids


async def test_metadata_is_changed_and_cleared_and_bad_metadata_changes_nothing(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    reply = await client.chat.completions.create(
        model=MODEL,
        messages=QUESTION,
        max_tokens=2,
        store=True,
        metadata={"team": "docs"},
    )
    changed = await client.chat.completions.update(reply.id, metadata={"team": "ops", "stage": "review"})
    assert changed.model_dump()["metadata"] == {"team": "ops", "stage": "review"}
    assert changed.choices[0].message.content == reply.choices[0].message.content
    assert [c.id for c in (await client.chat.completions.list(metadata={"team": "ops"})).data] == [reply.id]
    assert (await client.chat.completions.list(metadata={"team": "docs"})).data == []

    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.update(reply.id, metadata={f"k{i}": "v" for i in range(17)})
    assert bad.value.body["param"] == "metadata"
    kept = await client.chat.completions.retrieve(reply.id)
    assert kept.model_dump()["metadata"] == {"team": "ops", "stage": "review"}

    async with chat_oasis.http() as http:
        cleared = await http.post(f"/v1/chat/completions/{reply.id}", json={"metadata": None})
        assert cleared.status_code == 200 and cleared.json()["metadata"] == {}
        missing = await http.post(f"/v1/chat/completions/{reply.id}", json={})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "metadata"
    assert (await client.chat.completions.list(metadata={"team": "ops"})).data == []


async def test_bad_metadata_on_create_is_refused_and_nothing_is_stored(chat_oasis: Harness) -> None:
    async with chat_oasis.http() as http:
        long_value = await http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": QUESTION, "store": True, "metadata": {"note": "x" * 513}},
        )
        assert long_value.status_code == 400, long_value.text
        assert long_value.json()["error"]["param"] == "metadata.note"
        nul = await http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": QUESTION, "store": True, "metadata": {"note": "a\u0000b"}},
        )
        assert nul.status_code == 400 and "NUL" in nul.json()["error"]["message"]  # PostgreSQL's text holds none
        assert (await http.get("/v1/chat/completions", params={"metadata[note]": "a\u0000b"})).status_code == 400
        listed = await http.get("/v1/chat/completions")
    assert listed.json()["data"] == []


async def test_a_deleted_completion_is_gone_and_still_anchors_a_cursor(chat_oasis: Harness) -> None:
    client = chat_oasis.sdk()
    _newer_sdk(client)
    first, second, third = [
        await client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, store=True) for _ in range(3)
    ]
    deleted = await client.chat.completions.delete(second.id)
    assert deleted.id == second.id and deleted.deleted and deleted.object == "chat.completion.deleted"
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.retrieve(second.id)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.messages.list(second.id)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.delete(second.id)
    assert [c.id for c in (await client.chat.completions.list()).data] == [first.id, third.id]
    assert [c.id for c in (await client.chat.completions.list(after=second.id)).data] == [third.id]
    # what the user deleted is not kept: only the tombstone that the cursor above named
    async with chat_oasis.container.db.session() as session:
        tombstone = await session.scalar(select(StoredChatCompletion).where(StoredChatCompletion.id == second.id))
    assert tombstone is not None and tombstone.completion_json == "{}" and tombstone.messages_json == "[]"


async def test_messages_page_by_their_ids(chat_oasis: Harness) -> None:
    conversation = [{"role": "user", "content": f"Message {i}"} for i in range(5)]
    reply = await _stored(chat_oasis, messages=conversation, max_tokens=2)
    base = f"/v1/chat/completions/{reply['id']}/messages"
    async with chat_oasis.http() as http:
        first = (await http.get(base, params={"limit": 2})).json()
        assert [m["content"] for m in first["data"]] == ["Message 0", "Message 1"] and first["has_more"]
        rest = (await http.get(base, params={"after": first["last_id"], "limit": 10})).json()
        assert [m["content"] for m in rest["data"]] == ["Message 2", "Message 3", "Message 4"]
        assert not rest["has_more"]
        backwards = (await http.get(base, params={"order": "desc", "limit": 2})).json()
        assert [m["id"] for m in backwards["data"]] == [f"{reply['id']}-4", f"{reply['id']}-3"]
        unknown = await http.get(base, params={"after": "msg_nope"})
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "after"


async def test_stored_completions_stay_in_their_project(chat_oasis: Harness) -> None:
    _, alpha_key = await chat_oasis.container.keys.create("alpha")
    _, beta_key = await chat_oasis.container.keys.create("beta")
    async with chat_oasis.http(api_key=alpha_key) as http:
        response = await http.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": QUESTION, "max_tokens": 2, "store": True}
        )
        completion_id = response.json()["id"]
    async with chat_oasis.http(api_key=beta_key) as http:
        assert (await http.get(f"/v1/chat/completions/{completion_id}")).status_code == 404
        assert (await http.get("/v1/chat/completions")).json()["data"] == []
        assert (await http.delete(f"/v1/chat/completions/{completion_id}")).status_code == 404
        changed = await http.post(f"/v1/chat/completions/{completion_id}", json={"metadata": {"k": "v"}})
        assert changed.status_code == 404
        assert (await http.get(f"/v1/chat/completions/{completion_id}/messages")).status_code == 404
    async with chat_oasis.http(api_key=alpha_key) as http:
        assert (await http.get(f"/v1/chat/completions/{completion_id}")).status_code == 200


class _RepeatsItsIds(ScriptedChat):
    """An upstream whose every answer has the same id (some local servers count theirs from 0 at each start)."""

    usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}

    def script(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        return [{"role": "assistant", "content": "Blue"}, {"content": "."}], "stop"


async def test_answers_of_an_upstream_are_stored_under_ids_of_their_own(start_oasis: Callable[..., Any]) -> None:
    async with upstream_oasis(start_oasis, _RepeatsItsIds) as harness:
        body = {"model": "remote", "messages": QUESTION, "stream": True, "store": True}
        ids = []
        async with harness.http() as client:
            for _ in range(2):
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    frames = [line[6:] async for line in response.aiter_lines() if line.startswith("data: {")]
                chunks = [json.loads(frame) for frame in frames]
                # one id the whole stream through, and no usage the client did not ask for
                assert len({chunk["id"] for chunk in chunks}) == 1 and all("usage" not in c for c in chunks)
                ids.append(chunks[0]["id"])
            assert ids[0] != ids[1] and "chatcmpl-1" not in ids
            for completion_id in ids:
                stored = (await client.get(f"/v1/chat/completions/{completion_id}")).json()
                assert stored["choices"][0]["message"]["content"] == "Blue."
                assert stored["usage"]["completion_tokens"] == 2  # the upstream was asked for its usage


async def test_a_request_made_again_under_its_key_is_stored_once_with_its_newer_answer(oasis: Harness) -> None:
    # what a batch does with a line that a crash made it answer twice
    stored = oasis.container.stored_chats
    project = (await oasis.container.keys.authenticate(None, open_access=True)).project_id
    request = ChatCompletionRequest.model_validate({"model": MODEL, "messages": QUESTION, "store": True})
    first, second = (
        {"id": "x", "object": "chat.completion", "created": 1, "model": MODEL, "choices": [_choice(text)]}
        for text in ("Red.", "Blue.")
    )
    kept_first = await stored.kept(project, request, first, None, request_key="batch_1/1")
    kept_second = await stored.kept(project, request, second, None, request_key="batch_1/1")
    assert kept_first["id"] == kept_second["id"] != "x"
    async with oasis.http() as http:
        listed = (await http.get("/v1/chat/completions")).json()["data"]
    assert [(item["id"], item["choices"][0]["message"]["content"]) for item in listed] == [(kept_first["id"], "Blue.")]
    # another line's key is another completion
    other = await stored.kept(project, request, first, None, request_key="batch_1/2")
    assert other["id"] != kept_first["id"]


def _choice(text: str) -> dict[str, Any]:
    return {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}


class _HoldsItsUsage(http.server.BaseHTTPRequestHandler):
    """An upstream that streams its answer to its finish reason, and its usage chunk a second later."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "theirs"}
        answer = [
            {"index": 0, "delta": {"role": "assistant", "content": "Blue."}, "finish_reason": None},
            {"index": 0, "delta": {}, "finish_reason": "stop"},
        ]
        for choice in answer:
            self.wfile.write(f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode())
        self.wfile.flush()
        time.sleep(1)
        usage = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
        self.wfile.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())


def test_a_client_gone_once_its_answer_ended_still_has_it_stored(tmp_path: Path, postgres_url: str | None) -> None:
    """A client that stops reading at the finish reason (before the usage chunk it did not ask for) leaves a whole
    answer: it is stored, with its usage. Needs a real server: the test transport does not stream."""
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HoldsItsUsage)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    remote = {"base_url": f"http://127.0.0.1:{upstream.server_address[1]}/v1", "model": "theirs"}
    config = tmp_path / "oasis.yaml"
    config.write_text(
        json.dumps({"defaults": False, "models": [{"id": "remote", "engine": "upstream", "options": remote}]})
    )
    try:
        with oasis_server(tmp_path / "data", oasis_env(postgres_url), "--config", str(config)) as server:
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="sk-test")
            if not hasattr(client.chat.completions, "retrieve"):
                pytest.skip("this SDK has no stored chat completions")
            stream = client.chat.completions.create(model="remote", messages=QUESTION, stream=True, store=True)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].finish_reason:
                    break
            stream.close()  # gone, though the stream has not ended
            deadline = time.monotonic() + 15
            while True:
                try:
                    stored = client.chat.completions.retrieve(chunk.id)
                    break
                except openai.NotFoundError:
                    assert time.monotonic() < deadline, "the answer was not stored"
                    time.sleep(0.2)
            assert stored.choices[0].message.content == "Blue." and stored.choices[0].finish_reason == "stop"
            assert stored.usage is not None and stored.usage.completion_tokens == 2
    finally:
        upstream.shutdown()
        upstream.server_close()
