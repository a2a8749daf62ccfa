"""Replies in OpenAI's harmony format (gpt-oss): a reply is a run of messages, each `<|channel|>NAME`, maybe a
recipient (`to=functions.NAME`, before the channel or after it) and a `<|constrain|>json`, then `<|message|>`
and its body up to `<|end|>`, `<|call|>` or `<|return|>`; the next message opens with `<|start|>assistant`.
The `analysis` channel is the thinking (`reasoning_content`), `final` the answer, a message to `functions.NAME`
a call with its body as the arguments; `commentary` without a recipient is a preamble shown as content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oasis.services.chat.tool_formats import FORMATS, ParsedCall

MARKERS = (*FORMATS["harmony"].markers, "<|return|>")
_HEADER = re.compile(
    r"\s*(?:<\|start\|>\s*assistant)?(?P<before>[^<]*)<\|channel\|>\s*(?P<channel>\w+)(?P<after>[^<]*)"
    r"(?:<\|constrain\|>[^<]*)?<\|message\|>"
)
_RECIPIENT = re.compile(r"to=functions\.([\w.-]+)")
_BODY_END = re.compile(r"<\|(?:end|call|return|start)\|>")


@dataclass
class HarmonyReply:
    reasoning: str = ""
    content: str = ""
    calls: list[ParsedCall] = field(default_factory=list)


def read_harmony(text: str, functions: Mapping[str, Any] | None, *, final: bool) -> HarmonyReply:
    """What `text` says so far; while it is still being written, a body's last characters that may be a
    marker's beginning, and a header not yet complete, are left out."""
    reply = HarmonyReply()
    position = 0
    while position < len(text):
        header = _HEADER.match(text, position)
        if header is None:
            rest = text[position:]
            if not final and _may_become_header(rest):
                break
            reply.content += rest  # text outside the format: the answer as written
            break
        end = _BODY_END.search(text, header.end())
        closed = end is not None
        stop = end.start() if end is not None else len(text)
        body = text[header.end() : stop]
        if not closed and not final:
            body = body[: len(body) - marker_prefix(body)]
        recipient = _RECIPIENT.search(header.group("before") + header.group("after"))
        if recipient is not None and functions is not None and recipient.group(1) in functions:
            if closed or final:  # a call is read once its message is whole
                reply.calls.append(_call(recipient.group(1), body))
        elif header.group("channel") == "analysis":
            reply.reasoning += body
        else:  # final, a commentary preamble, or a message to a tool that was not offered
            reply.content += body
        if end is None:
            break
        position = end.end() if end.group(0) != "<|start|>" else end.start()
    return reply


def _call(name: str, body: str) -> ParsedCall:
    try:
        arguments = json.loads(body.strip() or "{}")
    except json.JSONDecodeError:
        return ParsedCall(name, json.dumps({}))  # not a call's arguments: checked and repaired with the schema
    return ParsedCall(name, json.dumps(arguments if isinstance(arguments, dict) else {}, ensure_ascii=False))


def _may_become_header(rest: str) -> bool:
    """Whether text that is not (yet) a message header may still grow into one."""
    stripped = rest.lstrip()
    if "<|message|>" in stripped:
        return False
    if stripped.startswith("<|") or "<|".startswith(stripped):
        return True
    return stripped.startswith("to=functions.") or "to=functions.".startswith(stripped[:13])


def marker_prefix(body: str, markers: tuple[str, ...] = MARKERS) -> int:
    """How long a tail of `body` is the beginning of one of `markers`."""
    for size in range(min(max(len(marker) for marker in markers) - 1, len(body)), 0, -1):
        if any(marker.startswith(body[-size:]) for marker in markers):
            return size
    return 0
