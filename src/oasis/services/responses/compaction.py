"""Compaction (`POST /v1/responses/compact`): a conversation made short for later requests. The model writes a
summary of it; the compacted output is the conversation's user messages, then a `compaction` item that carries the
summary. That item is opaque to clients (OpenAI's is encrypted; here it is the summary, encoded and tagged, which
the client could read: it is its own conversation). Sent back as input, it is read as a user message holding the
summary, in its place."""

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


def item(summary: str) -> dict[str, Any]:
    """The compaction output item that carries `summary`."""
    encoded = base64.urlsafe_b64encode(json.dumps({"summary": summary}).encode()).decode()
    return {"id": new_id("cmp_"), "type": TOOL_TYPE, "encrypted_content": _TAG + encoded}


def message(compaction: dict[str, Any], param: str) -> dict[str, Any]:
    """A compaction item sent back as input, as the chat message the model reads; a 400 for content that is not in
    the form this server gives it."""
    content = compaction.get("encrypted_content")
    summary = None
    if isinstance(content, str) and content.startswith(_TAG):
        try:
            summary = json.loads(base64.urlsafe_b64decode(content[len(_TAG) :].encode())).get("summary")
        except (ValueError, binascii.Error, AttributeError, RecursionError):
            summary = None
    if not isinstance(summary, str):
        raise invalid_request(
            "This compaction item's `encrypted_content` is not one this server makes (POST /v1/responses/compact).",
            param=f"{param}.encrypted_content",
        )
    return {"role": "user", "content": _READ_AS + summary}


def is_summary(content: Any) -> bool:
    """Whether a user message's content is a compaction read back (which a later compaction summarizes again,
    rather than keeping it as a user message)."""
    return isinstance(content, str) and content.startswith(_READ_AS)
