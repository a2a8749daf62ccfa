"""The models users bring, through the official SDK (issue 20): forced calls under each family's own template,
thinking read into `reasoning_content`, and marker tokens that reach the text. The default SmolLM2 weights
play each family by wearing its chat template (the `chat_template` option)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import pytest

from oasis.engines.llamacpp.engine import LlamaCppEngine
from oasis.engines.llamacpp.weights import gguf_path
from oasis.engines.text import SamplingParams
from oasis.protocol.extensions import ChatCompletionRequest
from oasis.services.chat.reply import Reply
from oasis.services.chat.tool_formats import ParsedCall
from oasis.services.chat.tools import fits
from oasis.settings import ModelSpec
from tests.conftest import Harness, smollm

MODEL = "smollm2-135m-instruct"
TEMPLATES = Path(__file__).parent.parent / "fixtures" / "chat_templates"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
HISTORY: list[Any] = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
    {"role": "assistant", "content": "It is sunny in Paris, 21 C."},
    {"role": "user", "content": "And in Oslo?"},
]
# SmolLM2's own turns, with the assistant's turn opening a thinking block as QwQ's and R1's templates do.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


@pytest.mark.parametrize(
    "template",
    [
        "Qwen-Qwen2.5-7B-Instruct.jinja",
        "meta-llama-Llama-3.1-8B-Instruct.jinja",
        "mistralai-Mistral-Nemo-Instruct-2407.jinja",
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        "openai-gpt-oss-120b.jinja",  # harmony: replies are addressed messages, but a forced one is bare JSON
        "muse-glimmer.jinja",
    ],
)
async def test_forced_calls_keep_their_grammar_under_every_family_template(
    start_oasis: Callable[..., Any], template: str
) -> None:
    harness = await start_oasis(
        engine_factories=None, models=[smollm(chat_template=(TEMPLATES / template).read_text())]
    )
    asked: dict[str, Any] = {
        "model": MODEL,
        "messages": HISTORY,
        "tools": TOOLS,
        "tool_choice": "required",
        "temperature": 0,
        "max_tokens": 60,
    }
    reply = await harness.sdk().chat.completions.create(**asked)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)
    assert getattr(choice.message, "reasoning_content", None) is None  # the prompt opened <think>: no thinking
    # streamed: the call as it is written, and nothing of its JSON as content (harmony's reader took it for text)
    chunks = [chunk async for chunk in await harness.sdk().chat.completions.create(**asked, stream=True)]
    deltas = [delta for chunk in chunks for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices]
    assert "".join(delta.function.arguments or "" for delta in deltas if delta.function) == call.function.arguments
    assert not any(chunk.choices[0].delta.content for chunk in chunks if chunk.choices)


# SmolLM2's own turns (it knows no Llama 3 tokens) with earlier calls written as Llama 3's template writes them
LLAMA_3_CALLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}"
    '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}{% endfor %}'
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# ... and as Mistral's templates write them: Nemo's JSON list, Ministral 3's `name[ARGS]{…}`
MISTRAL_CALLS_TEMPLATES = {
    "list": (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}[TOOL_CALLS][{% for c in m.tool_calls %}"
        '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}{% endfor %}]'
        "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "named": (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}"
        "[TOOL_CALLS]{{ c.function.name }}[ARGS]{{ c.function.arguments | tojson }}{% endfor %}"
        "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
}


# ... and as Qwen3-Coder's template writes them: XML in `<tool_call>` tags
QWEN3_CODER_CALLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "<tool_call>\n<function={{ c.function.name }}>\n{% for key, value in c.function.arguments | items %}"
    "<parameter={{ key }}>\n{{ value }}\n</parameter>\n{% endfor %}</function>\n</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# ... and as Seed-OSS's does: in its own tags, a value on its parameter's line
SEED_OSS_CALLS_TEMPLATE = QWEN3_CODER_CALLS_TEMPLATE.replace("tool_call>", "seed:tool_call>").replace(
    ">\n{{ value }}\n<", ">{{ value }}<"
)


# ... and as GLM's and MiniMax-M2's do, in markup of their own
GLM_CALLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "<tool_call>{{ c.function.name }}{% for key, value in c.function.arguments | items %}"
    "\n<arg_key>{{ key }}</arg_key>\n<arg_value>{{ value }}</arg_value>{% endfor %}\n</tool_call>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MINIMAX_M2_CALLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}<minimax:tool_call>\n"
    '{% for c in m.tool_calls %}<invoke name="{{ c.function.name }}">\n'
    '{% for key, value in c.function.arguments | items %}<parameter name="{{ key }}">{{ value }}</parameter>\n'
    "{% endfor %}</invoke>\n{% endfor %}</minimax:tool_call>"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# ... and as DeepSeek V3.2's does: MiniMax-M2's markup in DSML, each value marked text or JSON
DSML_CALLS_TEMPLATE = (
    MINIMAX_M2_CALLS_TEMPLATE.replace("minimax:tool_call>", "|DSML|function_calls>")
    .replace("<invoke ", "<|DSML|invoke ")
    .replace("</invoke>", "</|DSML|invoke>")
    .replace('name="{{ key }}">', 'name="{{ key }}" string="true">')
    .replace("<parameter ", "<|DSML|parameter ")
    .replace("</parameter>", "</|DSML|parameter>")
    .replace("|DSML|", "\uff5cDSML\uff5c")
)


# ... and as Kimi K2's and DeepSeek's do: each call named between tokens of their own, in a section (DeepSeek V3.1's
# name, tool-sep and the arguments; R1's `function`, tool-sep, the name and the arguments in a ```json fence)
KIMI_K2_CALLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}<|tool_calls_section_begin|>"
    "{% for c in m.tool_calls %}<|tool_call_begin|>functions.{{ c.function.name }}:{{ loop.index0 }}"
    "<|tool_call_argument_begin|>{{ c.function.arguments | tojson }}<|tool_call_end|>{% endfor %}"
    "<|tool_calls_section_end|>"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEEPSEEK_CALLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}<\uff5ctool\u2581calls\u2581begin\uff5c>"
    "{% for c in m.tool_calls %}<\uff5ctool\u2581call\u2581begin\uff5c>{{ c.function.name }}<\uff5ctool\u2581sep\uff5c>"
    "{{ c.function.arguments | tojson }}<\uff5ctool\u2581call\u2581end\uff5c>{% endfor %}"
    "<\uff5ctool\u2581calls\u2581end\uff5c>"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DEEPSEEK_R1_CALLS_TEMPLATE = DEEPSEEK_CALLS_TEMPLATE.replace(
    "{{ c.function.name }}<\uff5ctool\u2581sep\uff5c>{{ c.function.arguments | tojson }}",
    "function<\uff5ctool\u2581sep\uff5c>{{ c.function.name }}\n```json\n{{ c.function.arguments | tojson }}\n```",
)

# ... and as gpt-oss's does: harmony's message addressed to the function, its body the arguments
HARMONY_CALLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "<|channel|>commentary to=functions.{{ c.function.name }} <|constrain|>json<|message|>"
    "{{ c.function.arguments | tojson }}<|call|>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# ... and as Gemma 4's does: `call:name{key:value}` in its tags, a string between its quote tokens
GEMMA_4_CALLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "<|tool_call>call:{{ c.function.name }}{{ '{' }}"
    '{% for key, value in c.function.arguments | items %}{{ key }}:<|"|>{{ value }}<|"|>{% endfor %}'
    "{{ '}' }}<tool_call|>{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# ... and as Command R7B's and Command A's do: a list of calls, each an id first, `tool_name` and `parameters`
COMMAND_R_CALLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}<|START_ACTION|>[\n"
    "{% for c in m.tool_calls %}    {{ '{' }}"
    '"tool_call_id": "{{ loop.index0 }}", "tool_name": "{{ c.function.name }}", '
    "\"parameters\": {{ c.function.arguments | tojson }}{{ '}' }}{% if not loop.last %},{% endif %}\n{% endfor %}"
    "]<|END_ACTION|>{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# ... and as LFM2's are written: a pythonic list in its tags
PYTHONIC_CALLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}<|tool_call_start|>["
    "{% for c in m.tool_calls %}{{ c.function.name }}("
    "{% for key, value in c.function.arguments | items %}{{ key }}={{ value | tojson }}{% endfor %})"
    "{% endfor %}]<|tool_call_end|>"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# ... and as GigaChat 3.1's does: its call token, then the call as JSON
GIGACHAT_CALLS_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "<|function_call|>{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}{% endfor %}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _called(city: str, number: int) -> list[Any]:
    arguments = json.dumps({"city": city})
    call = {"id": f"call_{number}", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    return [
        {"role": "user", "content": f"What's the weather in {city}?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": f"call_{number}", "content": "Sunny"},
    ]


@pytest.mark.parametrize(
    ("template", "parser"),
    [
        (LLAMA_3_CALLS_TEMPLATE, "llama3"),
        (MISTRAL_CALLS_TEMPLATES["list"], "mistral"),
        (MISTRAL_CALLS_TEMPLATES["named"], "mistral"),
        (QWEN3_CODER_CALLS_TEMPLATE, "hermes"),
        (SEED_OSS_CALLS_TEMPLATE, "seed_oss"),
        (GLM_CALLS_TEMPLATE, "glm"),
        (MINIMAX_M2_CALLS_TEMPLATE, "minimax_m2"),
        (DSML_CALLS_TEMPLATE, "dsml"),
        (KIMI_K2_CALLS_TEMPLATE, "kimi_k2"),
        (DEEPSEEK_CALLS_TEMPLATE, "deepseek"),
        (DEEPSEEK_R1_CALLS_TEMPLATE, "deepseek"),
        (HARMONY_CALLS_TEMPLATE, "harmony"),
        (GEMMA_4_CALLS_TEMPLATE, "gemma4"),
        (COMMAND_R_CALLS_TEMPLATE, "command_r"),
        (PYTHONIC_CALLS_TEMPLATE, "pythonic"),
        (GIGACHAT_CALLS_TEMPLATE, "gigachat"),
    ],
    ids=[
        "llama3",
        "mistral list",
        "mistral named",
        "qwen3-coder xml",
        "seed-oss xml",
        "glm",
        "minimax-m2",
        "dsml",
        "kimi-k2",
        "deepseek v3.1",
        "deepseek r1",
        "harmony",
        "gemma 4",
        "command r",
        "lfm2 pythonic",
        "gigachat 3.1",
    ],
)
async def test_a_call_the_model_chooses_streams_as_written_in_its_familys_markup(
    start_oasis: Callable[..., Any], template: str, parser: str
) -> None:
    """In Llama 3's family (a call is the answer, its arguments as `parameters`), Mistral's (`[TOOL_CALLS]` and a
    JSON list, as Nemo's template writes calls, or `[TOOL_CALLS]name[ARGS]{…}`, as Ministral 3's does), Qwen3-Coder's
    (XML in `<tool_call>` tags; Seed-OSS's in its own), GLM's, MiniMax-M2's and DSML's (markup of their own), Kimi
    K2's and DeepSeek's (each call named between tokens of their own, in a section), gpt-oss's (harmony's message
    addressed to the function), Gemma 4's (its own syntax for the arguments), Command R's (`tool_name` and
    `parameters`, after an id of its own), LFM2's (a pythonic list), GigaChat's (JSON after its call token), a call
    the model chooses is held to its function's schema from where it opens, and its arguments stream in pieces,
    joining to the whole answer's."""
    harness = await start_oasis(engine_factories=None, models=[smollm(chat_template=template, tool_parser=parser)])
    messages = [*_called("Rome", 1), *_called("Oslo", 2), {"role": "user", "content": "What's the weather in Paris?"}]
    # (room for markup that SmolLM2, which has none of these families' tokens, writes in many)
    asked: dict[str, Any] = {"model": MODEL, "messages": messages, "tools": TOOLS, "temperature": 0, "max_tokens": 120}
    whole = (await harness.sdk().chat.completions.create(**asked)).choices[0]
    assert whole.finish_reason == "tool_calls" and not whole.message.content
    (call,) = whole.message.tool_calls or []
    assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments)["city"], str)
    chunks = [chunk async for chunk in await harness.sdk().chat.completions.create(**asked, stream=True)]
    deltas = [delta for chunk in chunks for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices]
    assert deltas[0].function and deltas[0].function.name == "get_weather"
    assert "".join(delta.function.arguments or "" for delta in deltas if delta.function) == call.function.arguments
    assert len([delta for delta in deltas[1:] if delta.function and delta.function.arguments]) > 2  # in pieces
    assert not any(chunk.choices[0].delta.content for chunk in chunks if chunk.choices)


async def test_thinking_goes_to_reasoning_content_whole_and_streamed(start_oasis: Callable[..., Any]) -> None:
    harness = await start_oasis(engine_factories=None, models=[smollm(chat_template=THINKING_TEMPLATE)])
    client = harness.sdk()
    question = [{"role": "user", "content": "What is 2 + 2?"}]
    reply = await client.chat.completions.create(model=MODEL, messages=question, temperature=0, max_tokens=24)
    message = reply.choices[0].message
    thinking = message.model_extra["reasoning_content"]  # type: ignore[index]
    assert thinking and "<think>" not in thinking and "</think>" not in thinking
    if "</think>" not in thinking:  # a tiny model rarely closes the block: it is all thinking
        assert message.content in ("", None) or thinking not in message.content
    # the thinking's tokens are counted as OpenAI counts its reasoning models' hidden ones
    assert reply.usage  # read as a dict: SDKs before the field keep it unparsed
    reasoning_tokens = reply.usage.model_dump()["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning_tokens and 0 < reasoning_tokens <= reply.usage.completion_tokens
    if not message.content:
        assert reasoning_tokens >= reply.usage.completion_tokens - 2  # all thinking, but its markup
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=question,
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed_thinking = streamed_content = ""
    streamed_usage = None
    async for chunk in stream:
        streamed_usage = chunk.usage or streamed_usage
        for choice in chunk.choices:
            streamed_thinking += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            streamed_content += choice.delta.content or ""
    assert (streamed_thinking, streamed_content) == (thinking, message.content or "")
    assert streamed_usage
    assert streamed_usage.model_dump()["completion_tokens_details"]["reasoning_tokens"] == reasoning_tokens
    # logprobs are the content's: none of the thinking's tokens, whole or streamed
    scored = await client.chat.completions.create(
        model=MODEL, messages=question, temperature=0, max_tokens=24, logprobs=True
    )
    tokens = (scored.choices[0].logprobs.content or []) if scored.choices[0].logprobs else []
    assert "".join(token.token for token in tokens) == (scored.choices[0].message.content or "")
    streamed_tokens = ""
    async for chunk in await client.chat.completions.create(
        model=MODEL, messages=question, temperature=0, max_tokens=24, logprobs=True, stream=True
    ):
        for choice in chunk.choices:
            streamed_tokens += (
                "".join(token.token for token in (choice.logprobs.content or [])) if choice.logprobs else ""
            )
    assert streamed_tokens == (scored.choices[0].message.content or "")


async def test_reasoning_inline_leaves_the_thinking_in_the_content(start_oasis: Callable[..., Any]) -> None:
    harness = await start_oasis(
        engine_factories=None, models=[smollm(chat_template=THINKING_TEMPLATE, reasoning="inline")]
    )
    reply = await harness.sdk().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is 2 + 2?"}], temperature=0, max_tokens=24
    )
    message = reply.choices[0].message
    assert "reasoning_content" not in (message.model_extra or {})
    # the thinking block the prompt opened is put back, as llama.cpp's `reasoning_format: none` does
    assert message.content and message.content.startswith("<think>\n") and len(message.content) > len("<think>\n")


# Qwen3's switch: thinking opened, or an empty block closed at once when `enable_thinking` is false; and, as gpt-oss's
# template does, the reasoning effort written into the prompt.
SWITCH_TEMPLATE = (
    "{% if reasoning_effort is defined %}<|im_start|>system\nReasoning: {{ reasoning_effort }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)


async def test_reasoning_effort_and_chat_template_kwargs_reach_the_template(start_oasis: Callable[..., Any]) -> None:
    harness = await start_oasis(engine_factories=None, models=[smollm(chat_template=SWITCH_TEMPLATE)])
    client = harness.sdk()
    question: Any = [{"role": "user", "content": "What is 2 + 2?"}]

    async def ask(**fields: Any) -> Any:
        return await client.chat.completions.create(
            model=MODEL, messages=question, temperature=0, max_tokens=16, **fields
        )

    thinking = await ask()
    assert (thinking.choices[0].message.model_extra or {}).get("reasoning_content")
    for off in (
        {"extra_body": {"reasoning_effort": "none"}},
        {"extra_body": {"chat_template_kwargs": {"enable_thinking": False}}},
    ):
        reply = await ask(**off)
        assert not (reply.choices[0].message.model_extra or {}).get("reasoning_content"), off  # thinking was off
        assert reply.choices[0].message.content, off
    high = await ask(extra_body={"reasoning_effort": "high"})
    assert thinking.usage and high.usage
    assert high.usage.prompt_tokens > thinking.usage.prompt_tokens  # the template wrote "Reasoning: high"

    for fields, param in (
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"chat_template_kwargs": {"messages": []}}, "chat_template_kwargs"),
        ({"chat_template_kwargs": "thinking"}, "chat_template_kwargs"),
    ):
        async with harness.http() as http:
            refused = await http.post(
                "/v1/chat/completions", json={"model": MODEL, "messages": question, "max_tokens": 4, **fields}
            )
        assert refused.status_code == 400 and refused.json()["error"]["param"] == param, refused.text


async def test_a_marker_that_is_a_special_token_reaches_the_text() -> None:
    """llama.cpp writes special tokens as nothing; a family's markers (`<|python_tag|>`, `[TOOL_CALLS]`) must
    come out as their text for the reply to be read. SmolLM2's `<|im_start|>` stands in for one."""
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256)))
    await engine.start()
    try:
        (marker,) = engine.tokenize("<|im_start|>", add_special=False, parse_special=True)
        prompt = engine.tokenize("Hello", add_special=False)
        forced = {marker: 100.0}
        plain = [t async for t in engine.generate(prompt, SamplingParams(max_tokens=1, logit_bias=forced))]
        marked = SamplingParams(max_tokens=1, logit_bias=forced, markup_tokens=frozenset({marker}))
        read = [t async for t in engine.generate(prompt, marked)]
    finally:
        await engine.close()
    assert [t.token for t in plain] == [t.token for t in read] == [marker]
    assert plain[0].piece == b"" and read[0].piece == b"<|im_start|>"


async def test_a_call_whose_arguments_misfit_is_written_again_under_its_grammar(chat_oasis: Harness) -> None:
    """A model that calls an offered tool with arguments its schema refuses (`town` for `city`, an extra key)
    gets the call written again under that function's grammar, and the client receives arguments that fit."""
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": schema}}]
    request = ChatCompletionRequest.model_validate(
        {"model": MODEL, "messages": HISTORY[:1], "tools": tools, "temperature": 0, "max_tokens": 60}
    )
    service = chat_oasis.container.chat
    chat = service.prepare(request)
    misfit = ParsedCall("get_weather", json.dumps({"town": "Paris", "tz": "CET"}))
    assert not fits(chat.tools, misfit.name, misfit.arguments)  # type: ignore[arg-type]
    reply, spent = await service._repaired(chat, Reply("", "", [misfit]))
    (call,) = reply.calls
    arguments = json.loads(call.arguments)
    assert call.name == "get_weather" and set(arguments) == {"city"} and isinstance(arguments["city"], str)
    assert spent > 0
    untouched, nothing = await service._repaired(chat, reply)  # a call that fits is left as it is
    assert (untouched.calls, nothing) == (reply.calls, 0)


async def test_a_gguf_with_a_tool_use_template_uses_it_when_tools_are_offered(
    start_oasis: Callable[..., Any], tmp_path: Path
) -> None:
    """Converted models may carry named templates (`tokenizer.chat_template.tool_use`, as Hermes 2 Pro and
    Command R do); llama.cpp renders a request with tools through that one, and so does oasis."""
    tool_use = (TEMPLATES / "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja").read_text()
    source = gguf_path(ModelSpec(**smollm()))
    named = tmp_path / "named-templates.gguf"
    templates = [{"name": "default", "template": _smollm_template(source)}, {"name": "tool_use", "template": tool_use}]
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(source), str(named), "--force",
         "--chat-template", json.dumps(templates)],
        check=True, capture_output=True,
    )  # fmt: skip
    models = [
        {**smollm(), "id": "named", "package": None, "path": str(named), "aliases": []},
        {**smollm(chat_template=tool_use), "id": "hermes", "aliases": []},
        {**smollm(), "aliases": []},
    ]
    client = (await start_oasis(engine_factories=None, models=models)).sdk()

    async def prompt_tokens(model: str, **tools: Any) -> int:
        reply = await client.chat.completions.create(model=model, messages=HISTORY, max_tokens=1, **tools)
        assert reply.usage is not None
        return reply.usage.prompt_tokens

    with_tools = await prompt_tokens("named", tools=TOOLS)
    assert with_tools == await prompt_tokens("hermes", tools=TOOLS)
    assert with_tools != await prompt_tokens(MODEL, tools=TOOLS)
    assert await prompt_tokens("named") == await prompt_tokens(MODEL)  # without tools: the default template


def _smollm_template(path: Path) -> str:
    reader = gguf.GGUFReader(path)
    field = reader.get_field("tokenizer.chat_template")
    assert field is not None
    return str(field.contents())
