"""Compaction (`POST /v1/responses/compact`): a conversation made short for later requests. The model writes a
summary of it; the compacted output is the conversation's user messages, then a `compaction` item that carries the
summary. That item is opaque to clients (OpenAI's is encrypted; here it is the summary, encoded and tagged, which
the client could read: it is its own conversation). Sent back as input, it is read as a user message holding the
summary, in its place.

Server-side compaction (`context_management` on a response's creation) makes the same item when the rendered prompt
reaches the request's threshold, before the model answers; that item stands for everything before it (the response's
input too), so a later response reads the conversation from it on, as OpenAI's clients may prune it themselves."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from oasis.errors import invalid_request
from oasis.services import rate_limits
from oasis.storage.clock import new_id

TOOL_TYPE = "compaction"
_TAG = "oasis.compaction.v1."
# The most tokens the summary may take, and the room the request asking for it takes beside it.
SUMMARY_TOKENS = rate_limits.SUMMARY_TOKENS
ASKING_TOKENS = 128

PROMPT = (
    "Your context is about to be compacted. Write a summary of the conversation above for whoever continues it "
    "with nothing else to read: what the user asked for and told you (names, numbers, decisions, preferences), what "
    "was done and found (tool calls and their results), what remains open, and anything needed to go on. Be "
    "complete and concise; write the summary only."
)
_READ_AS = "A summary of the earlier conversation, which was compacted:\n\n"
# How a server-side compaction's summary is read: it replaces everything before it.
_READ_AS_REPLACING = "A summary of the conversation until here, which was compacted:\n\n"


def item(summary: str, replaces_earlier: bool = False) -> dict[str, Any]:
    """The compaction output item that carries `summary`; `replaces_earlier`: a server-side compaction's, which
    stands for everything before it."""
    carried: dict[str, Any] = {"summary": summary}
    if replaces_earlier:
        carried["replaces_earlier"] = True
    encoded = base64.urlsafe_b64encode(json.dumps(carried).encode()).decode()
    return {"id": new_id("cmp_"), "type": TOOL_TYPE, "encrypted_content": _TAG + encoded}


def message(compaction: dict[str, Any], param: str) -> dict[str, Any]:
    """A compaction item sent back as input, as the chat message the model reads; a 400 for content that is not in
    the form this server gives it."""
    content = compaction.get("encrypted_content")
    carried: Any = None
    if isinstance(content, str) and content.startswith(_TAG):
        try:
            carried = json.loads(base64.urlsafe_b64decode(content[len(_TAG) :].encode()))
        except (ValueError, binascii.Error, RecursionError):
            carried = None
    summary = carried.get("summary") if isinstance(carried, dict) else None
    if not isinstance(summary, str):
        raise invalid_request(
            "This compaction item's `encrypted_content` is not one this server makes (POST /v1/responses/compact).",
            param=f"{param}.encrypted_content",
        )
    replacing = carried.get("replaces_earlier") is True
    return {"role": "user", "content": (_READ_AS_REPLACING if replacing else _READ_AS) + summary}


def is_summary(content: Any) -> bool:
    """Whether a user message's content is a compaction read back (which a later compaction summarizes again,
    rather than keeping it as a user message)."""
    return isinstance(content, str) and content.startswith((_READ_AS, _READ_AS_REPLACING))


def since_latest(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages from the newest server-side compaction's summary on (all of them when there is none): the
    summary stands for what came before it."""
    for index in range(len(messages) - 1, -1, -1):
        content = messages[index].get("content")
        if messages[index].get("role") == "user" and str(content).startswith(_READ_AS_REPLACING):
            return messages[index:]
    return messages


def threshold(request_extra: dict[str, Any] | None) -> int | None:
    """The rendered-prompt tokens at which a response's `context_management` asks for server-side compaction (0:
    when the prompt would not fit the model's context); None when it asks for none. A 400 for an entry that is
    not one."""
    entries = (request_extra or {}).get("context_management")
    if entries is None:
        return None
    if not isinstance(entries, list):
        raise invalid_request("`context_management` is a list of entries.", param="context_management")
    found: int | None = None
    for index, entry in enumerate(entries):
        where = f"context_management[{index}]"
        if not isinstance(entry, dict) or entry.get("type") != TOOL_TYPE:
            raise invalid_request(
                f"A context management entry is an object of type '{TOOL_TYPE}'.", param=f"{where}.type"
            )
        value = entry.get("compact_threshold")
        if value is None:
            found = 0 if found is None else found
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise invalid_request(
                "`compact_threshold` is a whole number of tokens, at least 1.", param=f"{where}.compact_threshold"
            )
        found = value if not found else min(found, value)
    return found
