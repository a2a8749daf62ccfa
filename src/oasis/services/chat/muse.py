"""Replies in Muse Glimmer's format: a run of messages, each ` to=RECIPIENT<|message|>` and a body up to `<|eom|>`
(another message follows, opening with `<|start|>assistant`) or `<|eot|>` (the turn ends). A message to `self` is
the thinking (several join as one), to `user` or to no one the answer; a message to any other recipient whose body
is `<atem:function_calls>` holds calls, named by their `<atem:invoke name=…>` as llama.cpp reads them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from oasis.services.chat.harmony import HarmonyReply, marker_prefix
from oasis.services.chat.tool_formats import FORMATS, ParsedCall, parameter_value

MARKERS = FORMATS["muse_glimmer"].markers
_HEADER = re.compile(r"\s*(?:<\|start\|>\s*assistant)?(?: to=(?P<recipient>[^<]*))?<\|message\|>")
_BODY_END = re.compile(r"<\|(?:eom|eot|start)\|>")
_CALLS = re.compile(r"\s*<atem:function_calls>(?P<inner>.*?)</atem:function_calls>\s*", re.DOTALL)
_INVOKE = re.compile(r'<atem:invoke name="([^"]+)">(.*?)</atem:invoke>', re.DOTALL)
_PARAMETER = re.compile(r'<atem:parameter name="([^"]+)">(.*?)</atem:parameter>', re.DOTALL)
_OPENINGS = ("<|start|>", "to=", "<|message|>")


def read_muse(text: str, functions: Mapping[str, Any] | None, *, final: bool) -> HarmonyReply:
    """What `text` says so far; while it is still being written, a body's last characters that may be a
    marker's beginning, a header not yet complete, and a call not yet closed are left out."""
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
        body = text[header.end() : end.start() if end is not None else len(text)]
        recipient = (header.group("recipient") or "user").strip()
        if recipient == "self":
            reply.reasoning += body if closed or final else body[: len(body) - marker_prefix(body, MARKERS)]
        elif recipient == "user":
            reply.content += body if closed or final else body[: len(body) - marker_prefix(body, MARKERS)]
        elif closed or final:  # a call is read once its message is whole
            calls = _calls(body, functions)
            if calls is None:
                reply.content += body  # not a call to an offered tool: the text as written
            else:
                reply.calls.extend(calls)
        if end is None:
            break
        position = end.end() if end.group(0) != "<|start|>" else end.start()
    return reply


def _calls(body: str, functions: Mapping[str, Any] | None) -> list[ParsedCall] | None:
    block = _CALLS.fullmatch(body)
    if block is None or functions is None:
        return None
    calls = []
    for name, inner in _INVOKE.findall(block.group("inner")):
        if name not in functions:
            return None
        arguments = {key: parameter_value(raw, name, key, functions) for key, raw in _PARAMETER.findall(inner)}
        calls.append(ParsedCall(name, json.dumps(arguments, ensure_ascii=False)))
    return calls or None


def _may_become_header(rest: str) -> bool:
    """Whether text that is not (yet) a message header may still grow into one."""
    if "<|message|>" in rest:
        return False
    stripped = rest.lstrip()
    return stripped.startswith(("<|start|>", "to=")) or any(opening.startswith(stripped) for opening in _OPENINGS)
