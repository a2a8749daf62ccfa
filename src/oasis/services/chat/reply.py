"""One choice's text read as the assistant message OpenAI clients expect: the thinking as `reasoning_content`,
the calls as `tool_calls`, the rest as `content`; for a stream, as it grows, sending only what is final.

A stream holds back text that may still become markup (a call being written, a closing tag) and trailing
blank space (dropped before a call), so the deltas a client joins equal the whole reply's fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oasis.services.chat.harmony import read_harmony
from oasis.services.chat.muse import read_muse
from oasis.services.chat.reasoning import ThinkTags, opened_by_prompt, split_thinking
from oasis.services.chat.tool_formats import ParsedCall, Reading, ToolFormat, answer_wrappers, read_calls


@dataclass(frozen=True)
class ReplyFormat:
    tools: ToolFormat
    think: ThinkTags | None  # None: thinking (if any) stays in the content
    thinking_open: bool = False  # the prompt opened the thinking block
    reasoning_prefill: str = ""  # the thinking's first words, written by the template (Apriel 1.6)
    content_prefill: str = ""  # thinking kept in the content: the block's opening that the prompt wrote


def reply_format_for(tool_format: ToolFormat, tags: ThinkTags, prompt: str, *, thinking: str) -> ReplyFormat:
    """How a reply to `prompt` is read: its thinking `separate` (reasoning_content), `inline` (left in the content,
    with the opening tag the prompt wrote put back, as llama.cpp's `reasoning_format: none`) or `none` (a grammar
    shapes the reply from its first token)."""
    opened = opened_by_prompt(prompt, tags)
    if thinking == "inline":
        return ReplyFormat(tool_format, None, content_prefill=opened)
    if thinking == "none":
        return ReplyFormat(tool_format, None)
    prefill = opened[len(tags.open) :] if tags.prefilled else ""
    return ReplyFormat(tool_format, tags, bool(opened), reasoning_prefill=prefill)


@dataclass
class Reply:
    reasoning: str
    content: str
    calls: list[ParsedCall] = field(default_factory=list)


@dataclass
class ReplyDelta:
    reasoning: str = ""
    content: str = ""


# Formats whose replies are messages addressed to the thinking, the user or a tool, each read by its own module
_ADDRESSED = {"harmony": read_harmony, "muse_glimmer": read_muse}


class ReplyReader:
    """Reads a reply whole (`feed` then `finish`) or as it streams; `functions` (name -> function) are the
    offered tools, none when calls are not read."""

    def __init__(self, reply_format: ReplyFormat, functions: Mapping[str, Any] | None) -> None:
        self._format = reply_format
        self._functions = functions
        self._text = ""
        self._answer_from: int | None = None if reply_format.think is not None else 0
        self._reading = Reading()
        self._sent = ReplyDelta()
        self._calls_follow = False  # the text was cut where calls begin (`cut`)
        # Without tools, only the family's channel markup is read (a call-shaped reply stays content as written).
        self._wrappers = answer_wrappers(reply_format.tools) if functions is None else None

    def feed(self, text: str) -> ReplyDelta:
        """Takes the next piece of text; returns what can be sent now."""
        self._text += text
        reasoning, content = self._read(final=False)
        return self._advance(reasoning.rstrip(), content.rstrip())

    def finish(self) -> tuple[Reply, ReplyDelta]:
        """The whole reply, and what of it was not sent yet."""
        reasoning, content = self._read(final=True)
        calls = self._reading.calls
        if calls or self._calls_follow:
            content = content.rstrip()
        reply = Reply(reasoning.strip(), content, list(calls))
        return reply, self._advance(reasoning.strip(), content)

    @property
    def fed(self) -> int:
        """The characters of text fed so far (up to the `cut`)."""
        return len(self._text)

    def cut(self, at: int) -> None:
        """The text from `at` on holds calls read elsewhere (`OpenedCalls`), not content: what of it was fed is
        dropped (a stream held it back as a call's possible beginning), and the content ends there."""
        self._text = self._text[:at]
        self._calls_follow = True

    def restore(self, text: str) -> None:
        """The calls after the `cut` came to nothing (cut short before a call was named): `text`, all that followed
        the cut, is read as any other."""
        self._text += text
        self._calls_follow = False

    def _read(self, *, final: bool) -> tuple[str, str]:
        if self._format.tools.name in _ADDRESSED:  # messages, not tags, separate thinking, answer and calls
            read = _ADDRESSED[self._format.tools.name](self._text, self._functions, final=final)
            self._reading = Reading(read.content, read.calls)
            return read.reasoning, read.content
        reasoning = ""
        if self._format.think is not None:
            thought = split_thinking(self._text, self._format.think, inside=self._format.thinking_open, final=final)
            reasoning = (self._format.reasoning_prefill + thought.reasoning).lstrip()
            self._answer_from = thought.answer_from
        if self._answer_from is None:
            return reasoning, ""
        answer = self._format.content_prefill + self._text[self._answer_from :]
        if self._functions is None:
            if self._wrappers is None:
                return reasoning, answer
            self._reading = read_calls(answer, self._wrappers, {}, final=final, reading=self._reading)
            return reasoning, self._reading.content
        self._reading = read_calls(answer, self._format.tools, self._functions, final=final, reading=self._reading)
        return reasoning, self._reading.content

    def content_spans(self) -> tuple[list[tuple[int, int]], int] | None:
        """Where in the text fed so far the content comes from, and up to where that is final (tokens wholly
        before it are settled: content or not); None when the format cannot tell (harmony's channels)."""
        if self._format.tools.name in _ADDRESSED:
            return None
        if self._answer_from is None:
            return [], 0
        start = self._answer_from - len(self._format.content_prefill)  # the prefill has no tokens of its own
        if self._functions is None and self._wrappers is None:
            return [(self._answer_from, len(self._text))], len(self._text)
        spans = [(max(start + begin, 0), start + end) for begin, end in self._reading.spans if start + end > 0]
        return spans, max(start + self._reading.decided, 0)

    def _advance(self, reasoning: str, content: str) -> ReplyDelta:
        delta = ReplyDelta(reasoning[len(self._sent.reasoning) :], content[len(self._sent.content) :])
        if len(reasoning) > len(self._sent.reasoning):
            self._sent.reasoning = reasoning
        if len(content) > len(self._sent.content):
            self._sent.content = content
        return delta
