"""Replies in each model family's markup, read into content, calls and reasoning, whole and streamed (issue 20).

The texts are real model output recorded here and llama.cpp's own examples of each family's format
(tests/fixtures/model_replies.json says where each came from); the templates are the families' own
(tests/fixtures/chat_templates, from llama.cpp's models/templates).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oasis.engines.options import TOOL_PARSERS
from oasis.protocol.extensions import ChatCompletionRequest
from oasis.services.chat.conversation import template_messages
from oasis.services.chat.reasoning import DEFAULT_TAGS, think_tags, without_thinking
from oasis.services.chat.reply import ReplyFormat, ReplyReader, reply_format_for
from oasis.services.chat.template import render_chat
from oasis.services.chat.tool_formats import FORMATS, ToolFormat, detect_format, read_calls, template_variables

FIXTURES = Path(__file__).parent.parent / "fixtures"
TEMPLATES = FIXTURES / "chat_templates"
REPLIES = json.loads((FIXTURES / "model_replies.json").read_text())["replies"]
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}


def _function(name: str, /, **properties: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {key: {"type": kind} for key, kind in properties.items()}}
    return {"name": name, "description": f"{name} tool", "parameters": schema}


OFFERED = {
    function["name"]: function
    for function in [
        _function("get_weather", city="string"),
        _function("get_time", tz="string", city="string"),
        _function("special_function", arg1="integer"),
        _function("special_function_with_opt", arg1="integer", arg2="integer"),
        _function("brave_search", query="string"),
        # the tools of llama.cpp's tests/test-chat.cpp, whose examples are among the fixtures
        _function("python", code="string"),
        _function("html", markup="string"),
        _function("empty_args"),
        _function("todo_list", todos="array"),
        _function("set_config", config="object"),
        _function("toggle", enabled="boolean"),
        _function("set_nullable", value="null"),
        _function("magic_int", ref="integer", name="string"),
        _function("imaginary_number", number="object"),
        _function("nested_args", tags="array", entries="array"),
    ]
}
TOOLS = [{"type": "function", "function": function} for function in list(OFFERED.values())[:5]]  # rendered


def _template(name: str | None) -> str:
    if name is None:  # SmolLM2's own template: no tool markup at all
        return "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    return (TEMPLATES / name).read_text()


def _format_of(template: str, thinking: bool = True) -> ReplyFormat:
    """What the chat service decides for a conversation rendered with this template."""
    tool_format = detect_format(template)
    prompt = render_chat(
        template,
        [{"role": "user", "content": "hi"}],
        special_tokens=SPECIAL,
        tools=TOOLS,
        variables={"enable_thinking": thinking, **template_variables(tool_format, TOOLS)},
    )
    return reply_format_for(tool_format, think_tags(template), prompt, thinking="separate")


@pytest.mark.parametrize(
    ("template", "family", "thinking_open"),
    [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", "hermes", False),
        ("Qwen-QwQ-32B.jinja", "hermes", True),
        ("Qwen3-Coder.jinja", "hermes", False),
        ("ibm-granite-granite-4.0.jinja", "hermes", False),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", "llama3", False),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "mistral", False),
        ("Mistral-Small-3.2-24B-Instruct-2506.jinja", "mistral", False),
        ("unsloth-mistral-Devstral-Small-2507.jinja", "mistral", False),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "deepseek", True),
        ("deepseek-ai-DeepSeek-V3.1.jinja", "deepseek", True),
        ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", "command_r", False),
        ("meetkai-functionary-medium-v3.1.jinja", "functionary", False),
        ("LFM2-8B-A1B.jinja", "pythonic", False),
        ("GLM-4.6.jinja", "glm", False),
        ("ByteDance-Seed-OSS.jinja", "seed_oss", False),
        ("NVIDIA-Nemotron-Nano-v2.jinja", "nemotron", True),
        ("unsloth-Apriel-1.5.jinja", "tool_calls_tags", False),
        ("MiniMax-M1.jinja", "tool_calls_tags", False),
        ("fireworks-ai-llama-3-firefunction-v2.jinja", "firefunction", False),
        ("Kimi-K2-Instruct.jinja", "kimi_k2", False),
        ("openai-gpt-oss-120b.jinja", "harmony", False),
        ("google-gemma-4-31B-it.jinja", "gemma4", False),
        ("google-gemma-4-31B-it-interleaved.jinja", "gemma4", False),
        ("deepseek-ai-DeepSeek-V3.2.jinja", "dsml", True),
        ("deepseek-ai-DeepSeek-V4.jinja", "dsml", True),
        ("MiniMax-M2.jinja", "minimax_m2", True),
        ("Kimi-K3.jinja", "kimi_k3", True),
        ("Apertus-8B-Instruct.jinja", "apertus", False),
        ("openbmb-MiniCPM5-1B.jinja", "minicpm5", True),
        ("CohereForAI-c4ai-command-r-plus-tool_use.jinja", "command_r_plus", False),
        ("inclusionai-ling-3.0-flash.jinja", "ling3", True),
        ("meetkai-functionary-medium-v3.2.jinja", "functionary_v3_2", False),
        ("MiniMax-M3.jinja", "minimax_m3", False),
        ("muse-glimmer.jinja", "muse_glimmer", False),
        ("Apriel-1.6-15b-Thinker-fixed.jinja", "tool_calls_tags", True),
    ],
)
def test_the_family_and_an_opened_thinking_block_come_from_the_template(
    template: str, family: str, thinking_open: bool
) -> None:
    reply_format = _format_of(_template(template))
    assert reply_format.tools.name == family
    assert reply_format.thinking_open is thinking_open


def test_every_tool_parser_option_names_a_format() -> None:
    assert set(TOOL_PARSERS) == set(FORMATS)


def _offered(reply: dict[str, Any]) -> dict[str, Any]:
    """The tools a recorded reply was read with: its own (llama.cpp's test tools), else the common ones."""
    if "tools" not in reply:
        return OFFERED
    functions = [tool.get("function", tool) for tool in reply["tools"]]  # OpenAI's shape, or llama.cpp's flat one
    return {function["name"]: function for function in functions}


def _read_whole(reply_format: ReplyFormat, text: str, offered: dict[str, Any] | None = None) -> Any:
    reader = ReplyReader(reply_format, offered or OFFERED)
    reader.feed(text)
    return reader.finish()[0]


def _calls(reply: Any) -> list[list[Any]]:
    return [[call.name, json.loads(call.arguments)] for call in reply.calls]


@pytest.mark.parametrize("reply", REPLIES, ids=[f"{r['template']}-{i}" for i, r in enumerate(REPLIES)])
def test_recorded_replies_read_into_content_calls_and_reasoning(reply: dict[str, Any]) -> None:
    reply_format = _format_of(_template(reply["template"]), reply.get("enable_thinking", True))
    read = _read_whole(reply_format, reply["text"], _offered(reply))
    assert (read.reasoning, read.content, _calls(read)) == (reply["reasoning"], reply["content"], reply["calls"])


@pytest.mark.parametrize("reply", REPLIES, ids=[f"{r['template']}-{i}" for i, r in enumerate(REPLIES)])
def test_streamed_in_pieces_cut_anywhere_the_deltas_add_up_and_no_markup_leaks(reply: dict[str, Any]) -> None:
    reply_format = _format_of(_template(reply["template"]), reply.get("enable_thinking", True))
    text = reply["text"]
    for size in (1, 2, 3, 7):  # every cut position, in pieces of a few characters as tokens come
        reader = ReplyReader(reply_format, _offered(reply))
        reasoning = content = ""
        for start in range(0, len(text), size):
            delta = reader.feed(text[start : start + size])
            reasoning += delta.reasoning
            content += delta.content
            if reply["calls"]:  # until the reply ends, nothing of a call's markup goes out as content
                assert content == reply["content"][: len(content)], (size, start, content)
        whole, rest = reader.finish()
        reasoning += rest.reasoning
        content += rest.content
        assert (reasoning, content, _calls(whole)) == (reply["reasoning"], reply["content"], reply["calls"])


def test_a_call_to_a_tool_not_offered_stays_content_in_every_family() -> None:
    for tool_format in FORMATS.values():
        text = '<tool_call>\n{"name": "launch_rocket", "arguments": {}}\n</tool_call>'
        reading = read_calls(text, tool_format, OFFERED, final=True)
        assert (reading.content, reading.calls) == (text, [])


def test_text_around_calls_is_content_and_parallel_calls_are_all_read() -> None:
    text = (
        "I will check both.\n<tool_call>\n"
        '{"name": "get_time", "arguments": {"tz": "Asia/Tokyo"}}\n</tool_call>\n<tool_call>\n'
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    reading = read_calls(text, FORMATS["hermes"], OFFERED, final=True)
    assert reading.content.strip() == "I will check both."
    assert [call.name for call in reading.calls] == ["get_time", "get_weather"]


@pytest.mark.parametrize(
    "text",
    [
        'Use a list: [1, 2, 3] and a dict {"a": 1}.',
        "See [the docs](https://example.com) for more.",
        'A JSON answer: {"name": "Ada", "born": 1815}',
        "```python\nprint('hi')\n```",
    ],
)
def test_ordinary_text_with_brackets_is_content(text: str) -> None:
    for tool_format in FORMATS.values():
        assert read_calls(text, tool_format, OFFERED, final=True).content == text


def test_thinking_is_not_fed_back_in_later_turns() -> None:
    assert without_thinking("<think>Let me see.</think>\n\nIt is 84.", DEFAULT_TAGS) == "It is 84."
    assert without_thinking("It is 84.", DEFAULT_TAGS) == "It is 84."


CONVERSATION = {
    "model": "m",
    "tools": TOOLS[:1],
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "sunny, 21 C"},
        {"role": "assistant", "content": "<think>It says sunny.</think>It is sunny in Paris."},
        {"role": "user", "content": "And Oslo?"},
    ],
}


@pytest.mark.parametrize("template", sorted(path.name for path in TEMPLATES.glob("*.jinja")))
def test_earlier_calls_results_and_thinking_render_as_each_template_expects(template: str) -> None:
    """Arguments once, as JSON (an object for templates that `tojson` them, the string for those that join
    it to text), Mistral's 9-character call ids, no earlier thinking."""
    source = _template(template)
    tool_format: ToolFormat = detect_format(source)
    request = ChatCompletionRequest.model_validate(CONVERSATION)
    prompt = render_chat(
        source,
        template_messages(request, source, tool_format),
        special_tokens=SPECIAL,
        tools=request.model_dump()["tools"],
        variables={"enable_thinking": True, **template_variables(tool_format, request.model_dump()["tools"])},
    )
    assert "Paris" in prompt and "sunny, 21 C" in prompt and "It is sunny in Paris." in prompt
    assert "It says sunny." not in prompt
    assert '\\"city' not in prompt and "&#34;" not in prompt and "&lt;" not in prompt  # nothing encoded twice


def _stream(reply_format: ReplyFormat, text: str, size: int = 3) -> tuple[list[str], Any]:
    """The content deltas of `text` fed `size` characters at a time, and the whole reply."""
    reader = ReplyReader(reply_format, OFFERED)
    sent = [reader.feed(text[start : start + size]).content for start in range(0, len(text), size)]
    whole, rest = reader.finish()
    return [*sent, rest.content], whole


HERMES = ReplyFormat(FORMATS["hermes"], DEFAULT_TAGS)
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


@pytest.mark.parametrize(
    ("before", "family"),
    [
        ('Example: {"name": "Bob", age: 3}. ', "hermes"),  # broken JSON that opens like a call
        ("I will use a <tool_call> block now.\n", "hermes"),  # the tag named in prose
        ("```python\nx = 1\n```\nThat sets x. ", "hermes"),  # a closing fence is not an opening
        ("Call [see(it's fine)] and go on. ", "pythonic"),  # an apostrophe in prose
    ],
)
def test_text_that_only_looks_like_markup_streams_on_and_a_later_call_is_read(before: str, family: str) -> None:
    reply_format = ReplyFormat(FORMATS[family], DEFAULT_TAGS)
    deltas, whole = _stream(reply_format, before + CALL)
    assert _calls(whole) == [["get_weather", {"city": "Paris"}]]
    assert whole.content == before.rstrip() == "".join(deltas)
    streamed_before_the_call = "".join(deltas[: len(before) // 3])
    assert len(streamed_before_the_call) >= len(before) - 12  # held back no more than a possible opening


def test_a_call_fence_after_a_code_block_leaves_no_fence_in_the_content() -> None:
    text = 'Here:\n```python\nx = 1\n```\n```json\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n```'
    deltas, whole = _stream(HERMES, text)
    assert _calls(whole) == [["get_weather", {"city": "Oslo"}]]
    assert whole.content == "Here:\n```python\nx = 1\n```" == "".join(deltas)


def test_blank_space_inside_an_opening_does_not_let_a_call_out_as_content() -> None:
    text = "Sure: {\n" + " " * 60 + '"name": "get_weather", "arguments": {"city": "Paris"}}'
    deltas, whole = _stream(HERMES, text, size=1)
    assert _calls(whole) == [["get_weather", {"city": "Paris"}]]
    assert "".join(deltas) == whole.content == "Sure:"


def test_a_fence_of_blank_space_inside_tags_reads_in_linear_time() -> None:
    """A regular expression on the fence once backtracked cubically: 8000 spaces took minutes."""
    text = "<tool_call>```" + " " * 8000 + "x</tool_call>"
    whole = _read_whole(HERMES, text)
    assert whole.calls == [] and whole.content == text


def test_a_schema_that_cannot_be_checked_lets_the_call_through() -> None:
    from oasis.services.chat.tools import ToolPlan, fits

    broken = {"name": "get_weather", "parameters": {"$ref": "#/definitions/missing"}}
    plan = ToolPlan(mode="auto", functions=[broken], parallel=True, legacy=False)
    assert fits(plan, "get_weather", '{"city": "Paris"}')


def test_checking_a_call_against_its_schema_never_fetches_a_ref_from_the_network() -> None:
    """jsonschema's default registry fetched any URL a `$ref` named (urlopen, no timeout, on the event loop): a
    function's parameters could make the server request any address, or wait on one that never answers."""
    import http.server
    import threading

    from oasis.services.chat.tools import ToolPlan, fits

    asked: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = b'{"type": "integer"}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/schema.json"
        remote = {"name": "count", "parameters": {"type": "object", "properties": {"n": {"$ref": url}}}}
        plan = ToolPlan(mode="auto", functions=[remote], parallel=False, legacy=False)
        assert fits(plan, "count", '{"n": "not a number"}')  # unresolvable here, so it cannot be checked
        local = {"type": "object", "properties": {"n": {"$ref": "#/$defs/n"}}, "$defs": {"n": {"type": "integer"}}}
        inside = {"name": "count", "parameters": local}
        checked = ToolPlan(mode="auto", functions=[inside], parallel=False, legacy=False)
        assert fits(checked, "count", '{"n": 3}') and not fits(checked, "count", '{"n": "three"}')
    finally:
        server.shutdown()
    assert asked == []


def test_a_harmony_message_to_a_tool_not_offered_is_content() -> None:
    harmony = _format_of(_template("openai-gpt-oss-120b.jinja"))
    text = '<|channel|>commentary to=functions.launch_rocket<|message|>{"when": "now"}'
    whole = _read_whole(harmony, text)
    assert (whole.calls, whole.content) == ([], '{"when": "now"}')


def test_gemma_4_strings_hold_markup_raw_and_a_turn_end_closes_a_call() -> None:
    gemma = _format_of(_template("google-gemma-4-31B-it.jinja"))
    code = 'print("a, b}")\nrows = [1, 2]'
    text = f'Running it.<|tool_call>call:python{{code:<|"|>{code}<|"|>}}<turn|>'
    whole = _read_whole(gemma, text)
    assert (_calls(whole), whole.content) == ([["python", {"code": code}]], "Running it.")
    broken = '<|tool_call>call:python{code:<|"|>never closed}<tool_call|>'
    assert _read_whole(gemma, broken).calls == []


def test_dsml_values_follow_their_string_attribute() -> None:
    dsml = _format_of(_template("deepseek-ai-DeepSeek-V3.2.jinja"))
    block = (
        '<\uff5cDSML\uff5cfunction_calls>\n<\uff5cDSML\uff5cinvoke name="magic_int">\n'
        '<\uff5cDSML\uff5cparameter name="ref" string="false">7</\uff5cDSML\uff5cparameter>\n'
        '<\uff5cDSML\uff5cparameter name="name" string="true">42</\uff5cDSML\uff5cparameter>\n'
        "</\uff5cDSML\uff5cinvoke>\n</\uff5cDSML\uff5cfunction_calls>"
    )
    whole = _read_whole(dsml, "Checking.</think>" + block)
    assert (whole.reasoning, _calls(whole)) == ("Checking.", [["magic_int", {"ref": 7, "name": "42"}]])


def test_a_template_that_recurses_on_a_tool_is_a_400_not_a_crash() -> None:
    from oasis.errors import OasisError

    nullable = [{"type": "function", "function": OFFERED["set_nullable"]}]
    with pytest.raises(OasisError) as caught:
        render_chat(
            _template("CohereForAI-c4ai-command-r-plus-tool_use.jinja"),
            [{"role": "user", "content": "hi"}],
            special_tokens=SPECIAL,
            tools=nullable,
        )
    assert caught.value.status == 400 and caught.value.param == "tools"


def test_gemma_4s_earlier_template_reads_results_inside_the_call_turn() -> None:
    template = _template("google-gemma-4-31B-it-interleaved.jinja")
    conversation = {
        "model": "m",
        "tools": TOOLS[:1],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
            {"role": "assistant", "content": "It is sunny."},
            {"role": "user", "content": "Thanks"},
        ],
    }
    request = ChatCompletionRequest.model_validate(conversation)
    messages = template_messages(request, template, detect_format(template))
    prompt = render_chat(template, messages, special_tokens=SPECIAL, tools=TOOLS[:1])
    assert "<|tool_response>response:get_weather{" in prompt and "sunny, 21 C" in prompt
    assert "<|turn>tool" not in prompt and prompt.count("It is sunny.") == 1


@pytest.mark.parametrize(
    "text",
    [
        "<|tool_call>call:get_weather{city:[1}<tool_call|>",  # a stray bracket once looped for ever
        "<|tool_call>call:get_weather{:[1a:}<tool_call|>",
        "<|tool_call>call:get_weather{city:" + "[" * 1100 + "<tool_call|>",  # once a RecursionError: a 500
        '<|tool_call>call:get_weather{city:<|"|>x<tool_call|>tail<|"|>}',  # a value may not run past the end
        "<tool_call>" + "[" * 20000 + "</tool_call>",  # too deep for JSON
    ],
)
def test_broken_calls_stay_text_quickly(text: str) -> None:
    gemma = _format_of(_template("google-gemma-4-31B-it.jinja"))
    whole = _read_whole(gemma, text)
    assert whole.calls == [] and whole.content == text


def test_a_long_function_name_is_held_back_whole_while_streamed() -> None:
    minicpm = _format_of(_template("openbmb-MiniCPM5-1B.jinja"))
    name = "mcp__github__create_pull_request_review"
    offered = {name: _function(name, body="string")}
    text = f'</think>Filing it.<function name="{name}"><param name="body">LGTM</param></function>'
    reader = ReplyReader(minicpm, offered)
    content = "".join(reader.feed(text[start : start + 2]).content for start in range(0, len(text), 2))
    whole, rest = reader.finish()
    assert content + rest.content == whole.content == "Filing it."
    assert _calls(whole) == [[name, {"body": "LGTM"}]]


def test_an_undefined_value_given_to_tojson_is_the_callers_error_not_a_crash() -> None:
    from oasis.errors import OasisError

    with pytest.raises(OasisError) as caught:
        render_chat(
            "{{ messages[0].nothing.deeper | tojson }}", [{"role": "user", "content": "hi"}], special_tokens=SPECIAL
        )
    assert caught.value.status == 400


def test_a_template_that_cannot_take_the_request_is_a_400_not_a_crash() -> None:
    from oasis.errors import OasisError

    # Hermes 2 Pro's tool_use template loops over `tools` even when a request offers none.
    with pytest.raises(OasisError) as caught:
        render_chat(
            _template("NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja"),
            [{"role": "user", "content": "hi"}],
            special_tokens=SPECIAL,
        )
    assert caught.value.status == 400 and "chat template" in caught.value.message


@pytest.mark.parametrize(
    ("template", "text", "content"),
    [
        (
            "Kimi-K3.jinja",
            "Hmm.<|close|>think<|sep|><|open|>response<|sep|>Hello!<|close|>response<|sep|><|close|>message<|sep|>",
            "Hello!",
        ),
        ("CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", "<|START_RESPONSE|>Hello!<|END_RESPONSE|>", "Hello!"),
        ("meetkai-functionary-medium-v3.2.jinja", "all\nHello!", "Hello!"),
        # a call-shaped reply to a request that offered no tools stays as written
        ("Qwen-Qwen2.5-7B-Instruct.jinja", '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', None),
    ],
)
def test_without_tools_a_familys_channel_markup_is_still_left_out(
    template: str, text: str, content: str | None
) -> None:
    reply_format = _format_of(_template(template))
    for size in (1, 3, len(text)):
        reader = ReplyReader(reply_format, None)
        streamed = "".join(reader.feed(text[start : start + size]).content for start in range(0, len(text), size))
        whole, rest = reader.finish()
        assert streamed + rest.content == whole.content == (text if content is None else content)
        assert whole.calls == []


def test_thinking_kept_inline_starts_with_the_block_the_prompt_opened() -> None:
    """llama.cpp's `reasoning_format: none` (tests/test-chat.cpp line 2156, Qwen3.5): the content is the thinking
    as the model continued it, with the `<think>` the generation prompt wrote put back."""
    template = _template("Qwen3.5-4B.jinja")
    prompt = render_chat(
        template, [{"role": "user", "content": "hi"}], special_tokens=SPECIAL, variables={"enable_thinking": True}
    )
    inline = reply_format_for(detect_format(template), think_tags(template), prompt, thinking="inline")
    text = "I'm\nthinking\n</think>\n\nHello, world!\nWhat's up?"
    reader = ReplyReader(inline, None)
    streamed = "".join(reader.feed(piece).content for piece in (text[:5], text[5:20], text[20:]))
    whole, rest = reader.finish()
    assert whole.content == streamed + rest.content == "<think>\n" + text
    assert whole.reasoning == ""
