"""User messages' content parts of one kind, found, or each replaced by a text part (what a local text model reads
of a file or of audio)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from oasis.protocol import openapi_types as spec
from oasis.protocol.extensions import ChatCompletionRequest, UserMessage

Part = TypeVar("Part")


def has_parts(request: ChatCompletionRequest, kind: type) -> bool:
    return any(
        isinstance(message, UserMessage)
        and not isinstance(message.content, str)
        and any(isinstance(part, kind) for part in message.content)
        for message in request.messages
    )


async def with_parts_as_text(
    request: ChatCompletionRequest, kind: type[Part], text_of: Callable[[Part, int, int], Awaitable[str]]
) -> ChatCompletionRequest:
    """The request with each part of `kind` replaced by a text part: `text_of(part, message index, part index)`,
    called in the parts' order."""
    messages = list(request.messages)
    for index, message in enumerate(messages):
        if not isinstance(message, UserMessage) or isinstance(message.content, str):
            continue
        parts: list[object] = []
        for place, part in enumerate(message.content):
            if isinstance(part, kind):
                text = await text_of(part, index, place)
                parts.append(spec.ChatCompletionRequestMessageContentPartText(type="text", text=text))
            else:
                parts.append(part)
        messages[index] = message.model_copy(update={"content": parts})
    return request.model_copy(update={"messages": messages})
