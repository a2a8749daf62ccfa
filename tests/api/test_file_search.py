"""The file_search tool in runs, on the real SmolLM2 and e5 engines through the official SDK: the model's call,
the search of the assistant's and the thread's stores, the run step with its results, the answer's citations,
message attachments indexed into the thread's own store, and the tool's settings."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import openai
import pytest
from openai import AsyncAssistantEventHandler

from tests.api.test_vector_stores import DOCUMENTS, completed_store, upload, wait_for
from tests.conftest import E5, Harness, smollm

MODEL = "gpt-4o-mini"
SEARCH_TOOL: Any = {"type": "file_search"}
FORCED: Any = {"type": "file_search"}
INCLUDE_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"
MARKER = re.compile(r"【\d+:\d+†[^】]+】")
QUESTION = "How many eggs does the queen bee lay a day?"
FILES = {name: DOCUMENTS[name] for name in ("bees.html", "coffee.md", "tax.txt", "solar.txt")}


@pytest.fixture
async def search_oasis(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(), E5])
    return harness


async def _assistant(client: openai.AsyncOpenAI, store_id: str | None, **fields: Any) -> Any:
    fields.setdefault("tools", [SEARCH_TOOL])
    resources = {"file_search": {"vector_store_ids": [store_id]}} if store_id else None
    fields.setdefault("instructions", "Answer the question from the files, in one sentence.")
    return await client.beta.assistants.create(
        model=MODEL,
        temperature=0,
        tool_resources=resources,  # type: ignore[arg-type]
        **fields,
    )


async def _steps(client: openai.AsyncOpenAI, thread_id: str, run_id: str, include: bool = False) -> list[Any]:
    # The May-2024 SDK has no `include` argument; `extra_query` sends it as newer SDKs do (`include[]=`).
    extra = {"include": [INCLUDE_CONTENT]} if include else None
    steps = await client.beta.threads.runs.steps.list(run_id, thread_id=thread_id, order="asc", extra_query=extra)
    return list(steps.data)


def _search(call: Any) -> dict[str, Any]:
    """A file_search call's details as a dict: a model in today's SDK, a plain dict in the May-2024 one."""
    details = call.file_search
    return details if isinstance(details, dict) else details.model_dump()


def _answered(run: Any) -> None:
    """The run answered: completed, or cut by its token budget (the shipped 135M model may repeat itself)."""
    assert run.last_error is None
    assert run.status == "completed" or (
        run.status == "incomplete" and run.incomplete_details.reason == "max_completion_tokens"
    ), run.status


def _check_citations(text: Any, cited_from: set[str]) -> list[Any]:
    """Every annotation points exactly at a marker in the text and names a file the search returned."""
    annotations = list(text.annotations)
    for annotation in annotations:
        assert annotation.type == "file_citation"
        assert text.value[annotation.start_index : annotation.end_index] == annotation.text
        assert MARKER.fullmatch(annotation.text)
        assert annotation.file_citation.file_id in cited_from
        assert annotation.file_citation.quote
    assert len(MARKER.findall(text.value)) == len(annotations)
    return annotations


async def test_a_run_searches_the_assistants_store_and_cites_what_it_used(search_oasis: Harness) -> None:
    client = search_oasis.sdk()
    store_id, ids = await completed_store(search_oasis, FILES)
    assistant = await _assistant(client, store_id)
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": QUESTION}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tool_choice=FORCED, max_completion_tokens=256
    )
    _answered(run)
    assert run.usage is not None and run.usage.prompt_tokens > 0

    search_step, message_step = await _steps(client, thread.id, run.id)
    assert search_step.type == "tool_calls" and search_step.status == "completed"
    (call,) = search_step.step_details.tool_calls
    assert call.type == "file_search" and call.id
    results = _search(call)["results"]
    assert results and results[0]["file_id"] == ids["bees.html"] and results[0]["file_name"] == "bees.html"
    assert all(0 < result["score"] <= 1 for result in results)
    assert all(result.get("content") is None for result in results)  # contents only when asked for
    assert _search(call)["ranking_options"]["score_threshold"] == 0.0
    assert search_step.usage is not None and search_step.usage.total_tokens > 0
    assert message_step.type == "message_creation"
    total = sum(step.usage.total_tokens for step in (search_step, message_step))
    assert total == run.usage.total_tokens

    (with_content, _) = await _steps(client, thread.id, run.id, include=True)
    first = _search(with_content.step_details.tool_calls[0])["results"][0]
    assert "two thousand eggs" in first["content"][0]["text"]
    one = await client.beta.threads.runs.steps.retrieve(
        search_step.id, thread_id=thread.id, run_id=run.id, extra_query={"include": [INCLUDE_CONTENT]}
    )
    assert _search(one.step_details.tool_calls[0])["results"][0]["content"] == first["content"]  # type: ignore[union-attr]

    reply = (await client.beta.threads.messages.list(thread.id, run_id=run.id)).data[0]
    text = reply.content[0].text  # type: ignore[union-attr]
    _check_citations(text, {result["file_id"] for result in results})


class _Recorder(AsyncAssistantEventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.tool_types: list[str] = []
        self.annotations: list[Any] = []

    async def on_event(self, event: Any) -> None:
        self.names.append(event.event)

    async def on_tool_call_created(self, tool_call: Any) -> None:
        self.tool_types.append(tool_call.type)

    async def on_text_delta(self, delta: Any, snapshot: Any) -> None:
        self.annotations.extend(delta.annotations or [])


async def test_a_streamed_run_shows_the_search_step_and_citations_as_they_come(search_oasis: Harness) -> None:
    client = search_oasis.sdk()
    store_id, ids = await completed_store(search_oasis, FILES)
    # One result, and an instruction to quote it: the shipped 135M model then repeats the passage, so its answer
    # draws on it and must cite it.
    assistant = await _assistant(
        client,
        store_id,
        tools=[{"type": "file_search", "file_search": {"max_num_results": 1}}],
        instructions="Answer by quoting the sentence of the file that answers the question.",
    )
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": QUESTION}])
    recorder = _Recorder()
    async with client.beta.threads.runs.stream(
        thread_id=thread.id,
        assistant_id=assistant.id,
        tool_choice=FORCED,
        max_completion_tokens=256,
        event_handler=recorder,
    ) as stream:
        await stream.until_done()
        final_run = await stream.get_final_run()
        (message,) = await stream.get_final_messages()
    # openai < 1.40 does not know the `thread.run.incomplete` event (a run cut by max_completion_tokens, as the
    # tiny model's answer can be on some CPUs) and keeps the in_progress snapshot: the run as stored decides.
    _answered(await client.beta.threads.runs.retrieve(final_run.id, thread_id=thread.id))
    assert recorder.tool_types == ["file_search"]
    names = recorder.names
    assert names.index("thread.run.step.completed") < names.index("thread.message.created")
    stored = await client.beta.threads.messages.retrieve(message.id, thread_id=thread.id)
    stored_text = stored.content[0].text  # type: ignore[union-attr]
    assert message.content[0].text.value == stored_text.value  # type: ignore[union-attr]
    assert [a.file_citation.file_id for a in recorder.annotations] == [  # type: ignore[union-attr]
        a.file_citation.file_id for a in stored_text.annotations
    ]
    _check_citations(stored_text, {ids["bees.html"]})
    assert recorder.annotations, stored_text.value


async def test_files_attached_to_a_message_go_into_the_threads_own_store(search_oasis: Harness) -> None:
    client = search_oasis.sdk()
    bees = await upload(client, "bees.html", DOCUMENTS["bees.html"])
    solar = await upload(client, "solar.txt", DOCUMENTS["solar.txt"])
    assistant = await _assistant(client, None)
    # The run starts at once: it waits for the attached files to be ingested before it searches.
    run = await client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={
            "messages": [
                {
                    "role": "user",
                    "content": QUESTION,
                    "attachments": [
                        {"file_id": bees, "tools": [{"type": "file_search"}]},
                        {"file_id": solar, "tools": [{"type": "file_search"}]},
                    ],
                }
            ]
        },
        tool_choice=FORCED,
        max_completion_tokens=256,
    )
    _answered(run)
    thread = await client.beta.threads.retrieve(run.thread_id)
    (store_id,) = thread.tool_resources.file_search.vector_store_ids  # type: ignore[union-attr]
    store = (
        await client.beta.vector_stores.retrieve(store_id)
        if hasattr(client.beta, "vector_stores")
        else (
            await client.vector_stores.retrieve(store_id)  # type: ignore[attr-defined]
        )
    )
    assert store.file_counts.completed == 2
    assert store.expires_after is not None and store.expires_after.days == 7
    (search_step, _) = await _steps(client, thread.id, run.id)
    assert _search(search_step.step_details.tool_calls[0])["results"][0]["file_id"] == bees

    # A later attachment joins the same store.
    tax = await upload(client, "tax.txt", DOCUMENTS["tax.txt"])
    await client.beta.threads.messages.create(
        thread.id, role="user", content="And taxes?", attachments=[{"file_id": tax, "tools": [{"type": "file_search"}]}]
    )
    again = await client.beta.threads.retrieve(thread.id)
    assert again.tool_resources.file_search.vector_store_ids == [store_id]  # type: ignore[union-attr]

    async def indexed() -> bool:
        async with search_oasis.http() as http:
            listed = (await http.get(f"/v1/vector_stores/{store_id}/files")).json()
        return tax in {item["id"] for item in listed["data"]}

    await wait_for(indexed)


async def test_the_tools_settings_bound_and_filter_the_results(search_oasis: Harness) -> None:
    client = search_oasis.sdk()
    store_id, ids = await completed_store(search_oasis, FILES)
    settings = {"max_num_results": 3, "ranking_options": {"ranker": "auto", "score_threshold": 0.75}}
    assistant = await _assistant(client, store_id, tools=[{"type": "file_search", "file_search": settings}])
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": QUESTION}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tool_choice=FORCED, max_completion_tokens=256
    )
    _answered(run)
    search_step = (await _steps(client, thread.id, run.id))[0]
    call = search_step.step_details.tool_calls[0]
    assert _search(call)["ranking_options"]["score_threshold"] == 0.75
    # The unrelated files score under the threshold: only the bees file is left.
    assert {result["file_id"] for result in _search(call)["results"]} == {ids["bees.html"]}

    unbounded = await _assistant(
        client, store_id, tools=[{"type": "file_search", "file_search": {"max_num_results": 2}}]
    )
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": QUESTION}])
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=unbounded.id, tool_choice=FORCED, max_completion_tokens=256
    )
    assert len(_search((await _steps(client, thread.id, run.id))[0].step_details.tool_calls[0])["results"]) == 2


async def test_include_takes_only_the_search_contents(search_oasis: Harness) -> None:
    client = search_oasis.sdk()
    assistant = await _assistant(client, None)
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": QUESTION}])
    async with search_oasis.http() as http:
        reply = await http.post(
            f"/v1/threads/{thread.id}/runs",
            params={"include[]": "step_details.tool_calls[*].code_interpreter.outputs"},
            json={"assistant_id": assistant.id},
            headers={"OpenAI-Beta": "assistants=v2"},
        )
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "include"
    # A run whose assistant has no stores searches nothing and still answers.
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, tool_choice=FORCED, max_completion_tokens=256
    )
    _answered(run)
    (search_step, _) = await _steps(client, thread.id, run.id)
    assert _search(search_step.step_details.tool_calls[0])["results"] == []
