"""`logprobs.content` holds the tokens the content came from: not a call's markup, not the thinking, whole or
streamed, with tokens that split a character between them."""

from __future__ import annotations

import json
from typing import Any

from oasis.engines.text import SampledToken
from oasis.services.chat.logprobs import ContentTokens
from oasis.services.chat.reasoning import DEFAULT_TAGS
from oasis.services.chat.reply import ReplyFormat, ReplyReader
from oasis.services.chat.tool_formats import FORMATS

FUNCTIONS: dict[str, Any] = {"get_weather": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})
PIECES = [
    "<think>",
    "I should",
    " look",
    "</think>",
    "Sure",
    ",",
    " caf",
    "\u00e9".encode()[:1],
    "\u00e9".encode()[1:],
    ".\n",
]
PIECES += ["<tool_call>", "\n", CALL, "\n", "</tool_call>"]


def _tokens() -> list[SampledToken]:
    return [
        SampledToken(token=n, piece=piece if isinstance(piece, bytes) else piece.encode(), logprob=-0.1 * n)
        for n, piece in enumerate(PIECES)
    ]


def _reader() -> ReplyReader:
    return ReplyReader(ReplyFormat(FORMATS["hermes"], DEFAULT_TAGS, thinking_open=False), FUNCTIONS)


def _text(tokens: list[SampledToken]) -> str:
    return b"".join(token.piece for token in tokens).decode()


def test_whole_reply_shows_the_content_tokens_only() -> None:
    tokens = _tokens()
    reader = _reader()
    reader.feed(_text(tokens))
    reply, _ = reader.finish()
    placed = ContentTokens()
    placed.add(tokens)
    shown = placed.settled(reader, final=True)
    assert (reply.reasoning, [call.name for call in reply.calls]) == ("I should look", ["get_weather"])
    assert _text(shown).rstrip() == reply.content == "Sure, caf\u00e9."


def test_streamed_token_by_token_the_same_tokens_come_out_once() -> None:
    tokens = _tokens()
    reader = _reader()
    placed = ContentTokens()
    shown: list[SampledToken] = []
    decoded = b""
    for token in tokens:
        placed.add([token])
        decoded += token.piece
        try:
            text = decoded.decode()
        except UnicodeDecodeError:
            continue  # the engine sends text once a character is whole; the token waits with it
        decoded = b""
        reader.feed(text)
        shown += placed.settled(reader)
        assert not any(b"<" in t.piece for t in shown)  # no markup's token ever went out
    reader.finish()
    shown += placed.settled(reader, final=True)
    assert [token.token for token in shown] == [4, 5, 6, 7, 8, 9]


def test_without_tools_or_thinking_every_token_is_content() -> None:
    reader = ReplyReader(ReplyFormat(FORMATS["json"], None), None)
    tokens = [SampledToken(token=n, piece=piece) for n, piece in enumerate([b"Hello", b" <tool_call>", b" x"])]
    placed = ContentTokens()
    placed.add(tokens)
    reader.feed(_text(tokens))
    reader.finish()
    assert placed.settled(reader, final=True) == tokens


def test_thinking_kept_inline_shows_every_generated_token_and_not_the_prompts_tag() -> None:
    """With `reasoning: inline` the content starts with the `<think>` the prompt wrote: no token stands for it,
    and every token the model wrote (thinking included) is content, but a call's markup is not."""
    reader = ReplyReader(ReplyFormat(FORMATS["hermes"], None, content_prefill="<think>\n"), FUNCTIONS)
    tokens = _tokens()[1:]  # the model continues inside the opened block
    placed = ContentTokens()
    placed.add(tokens)
    reader.feed(_text(tokens))
    reply, _ = reader.finish()
    shown = placed.settled(reader, final=True)
    assert reply.content == "<think>\nI should look</think>Sure, caf\u00e9."
    assert "<think>\n" + _text(shown).rstrip() == reply.content
    assert [call.name for call in reply.calls] == ["get_weather"]
