"""Request bodies of the Responses API (after the 2.0.0 spec: `client.responses`), as current SDKs send them.

Input items and tools are kept as JSON objects here and read item by item (services/responses/items.py), so
that an item this server cannot take yet is refused by name rather than as a schema mismatch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from oasis.protocol.extensions import ReasoningEffort


class ReasoningSettings(BaseModel):
    effort: ReasoningEffort | None = None
    summary: str | None = None
    generate_summary: str | None = None  # the older name of `summary`


class TextFormat(BaseModel):
    """`text.format`: plain text, any JSON object, or JSON in a schema (named at this level, not nested)."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextSettings(BaseModel):
    format: TextFormat | None = None
    verbosity: str | None = None


class StreamOptions(BaseModel):
    include_obfuscation: bool | None = None


class CreateResponseRequest(BaseModel):
    # Fields of later API versions are accepted and ignored, as chat's are.
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str = ""  # a response naming a configured prompt may take the prompt's (else a 400 names `model`)
    input: str | list[dict[str, Any]] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: TextSettings | None = None
    reasoning: ReasoningSettings | None = None
    store: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    background: bool | None = None
    metadata: dict[str, Any] | None = None
    user: str | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CountInputTokensRequest(CreateResponseRequest):
    """`POST /v1/responses/input_tokens`: a response's request, counted rather than answered. `model` may be left
    out (the first text model served counts it)."""

    model: str | None = None  # type: ignore[assignment]


# Conversations: their items are read item by item (services/responses/items.py), as a response's input.


class CreateConversationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    items: list[Any] | None = None
    metadata: dict[str, Any] | None = None


class UpdateConversationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    metadata: dict[str, Any] | None


class AddItemsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    items: list[Any]
