"""Reasoning models think before they answer, in a block their template names (`<think>…</think>` for
DeepSeek-R1 distills, QwQ and Qwen3; `[THINK]…[/THINK]` for Magistral; Command-R's `<|START_THINKING|>`).
The thinking goes to `reasoning_content` (DeepSeek's API and vLLM name it so), never into `content`.

Some templates open the block in the prompt itself (the generation prompt ends with `<think>`), so the reply
starts inside it and only the closing tag appears, as llama.cpp reads such replies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThinkTags:
    open: str
    close: str
    # Markup that also ends the thinking, and begins the answer: DeepSeek V3.2+ and Ling 3 may start their calls
    # without closing the block first (llama.cpp reads them so).
    ended_by: tuple[str, ...] = ()
    # The template writes the thinking's first words itself after opening the block (Apriel 1.6's `Here are my
    # reasoning steps:`): they are part of the reasoning, as llama.cpp reads it.
    prefilled: bool = False


DEFAULT_TAGS = ThinkTags("<think>", "</think>")
# (what in a template shows the family, its tags); the first match wins
_KNOWN = (
    ("[THINK]", ThinkTags("[THINK]", "[/THINK]")),
    ("<|START_THINKING|>", ThinkTags("<|START_THINKING|>", "<|END_THINKING|>")),
    ("<seed:think>", ThinkTags("<seed:think>", "</seed:think>")),
    ("<|channel>thought", ThinkTags("<|channel>thought", "<channel|>")),  # Gemma 4
    ("<|inner_prefix|>", ThinkTags("<|inner_prefix|>", "<|inner_suffix|>")),  # Apertus
    (
        "Here are my reasoning steps:",
        ThinkTags("<|begin_assistant|>", "[BEGIN FINAL RESPONSE]", prefilled=True),
    ),  # Apriel 1.6
    # Kimi K3: the answer's channel (or the calls') may open without the thinking being closed
    (
        "<|end_of_msg|>",
        ThinkTags("<|open|>think<|sep|>", "<|close|>think<|sep|>", ("<|open|>response<|sep|>", "<|open|>tools<|sep|>")),
    ),
    ("Tool usage guidelines:", ThinkTags("<think>", "</think>", ('<function name="',))),  # MiniCPM5
    ("<mm:think>", ThinkTags("<mm:think>", "</mm:think>")),  # MiniMax-M3
    (
        "\uff5cDSML\uff5c",
        ThinkTags("<think>", "</think>", ("<\uff5cDSML\uff5cfunction_calls>", "<\uff5cDSML\uff5ctool_calls>")),
    ),
    ("<role>ASSISTANT</role>", ThinkTags("<think>", "</think>", ("<tool_call>",))),  # Ling 3
    # Kimi K2 (Thinking): calls, with or without their section, may open inside the thinking
    (
        "<|tool_calls_section_begin|>",
        ThinkTags("<think>", "</think>", ("<|tool_calls_section_begin|>", "<|tool_call_begin|>")),
    ),
    # Qwen3-Coder's XML calls (Qwen3.5, Nemotron 3 Nano, StepFun 3.5): a call may open inside the thinking
    ("<parameter=", ThinkTags("<think>", "</think>", ("<tool_call>",))),
)


def think_tags(template: str) -> ThinkTags:
    return next((tags for marker, tags in _KNOWN if marker in template), DEFAULT_TAGS)


def opens_thinking(prompt: str, tags: ThinkTags) -> bool:
    """Whether the rendered prompt leaves the model inside its thinking block."""
    if tags.prefilled:
        opened = prompt.rfind(tags.open)
        return opened >= 0 and tags.close not in prompt[opened:]
    return prompt.rstrip().endswith(tags.open)


def opened_by_prompt(prompt: str, tags: ThinkTags) -> str:
    """The thinking block as the prompt left it open (its tag, and any first words the template wrote), "" when
    the prompt leaves none open: what the reply continues."""
    if not opens_thinking(prompt, tags):
        return ""
    return prompt[prompt.rfind(tags.open) :]


@dataclass(frozen=True)
class Thought:
    reasoning: str  # the thinking read so far (a tail that may be the closing tag held back)
    answer_from: int | None  # where the answer starts in the text; None while the model is still thinking


def split_thinking(text: str, tags: ThinkTags, *, inside: bool, final: bool) -> Thought:
    """The reasoning at the start of `text` and where the answer begins. A block that never closes is all
    reasoning (the reply was cut short)."""
    start = 0
    head = text.lstrip()
    if head.startswith(tags.open):  # inside a block the prompt opened, a model may still write the tag again
        start = len(text) - len(head) + len(tags.open)
    elif not final and tags.open.startswith(head) and (head or not inside):
        return Thought("", None)  # nothing yet, or the opening tag is being written
    elif not inside:
        return Thought("", 0)
    end = text.find(tags.close, start)
    answer = end + len(tags.close)
    for marker in tags.ended_by:
        at = text.find(marker, start)
        if at >= 0 and (end < 0 or at < end):
            end = answer = at  # the marker is the answer's first markup
    if end < 0:
        if final:
            return Thought(text[start:], len(text))
        held = max(partial_suffix(text, marker) for marker in (tags.close, *tags.ended_by))
        return Thought(text[start : len(text) - held], None)
    rest = text[answer:]
    if not rest.strip() and not final:
        return Thought(text[start:end], None)  # the answer has not started; its leading blank lines are dropped
    return Thought(text[start:end], answer + len(rest) - len(rest.lstrip()))


def partial_suffix(text: str, marker: str) -> int:
    """How long a tail of `text` is the beginning of `marker`."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-size:]):
            return size
    return 0


def without_thinking(content: str, tags: ThinkTags = DEFAULT_TAGS) -> str:
    """An earlier assistant turn as it goes back to the model: its thinking (in its family's tags, or the
    common `<think>`) is not fed back."""
    for candidate in dict.fromkeys((tags, DEFAULT_TAGS)):
        thought = split_thinking(content, candidate, inside=False, final=True)
        if thought.answer_from:
            return content[thought.answer_from :]
    return content
