"""Request bodies of the Assistants API (assistants, threads, messages, runs), as today's clients send them.

The 2.0.0 spec's request types forbid fields that current SDKs send (`parallel_tool_calls`, `reasoning_effort`,
message content as parts, `response_format: json_schema`) and cap a run's tools at 20 where OpenAI now takes
128, so these bodies are written out here, field for field with the spec's limits, plus exactly those additions.
Unknown fields are still refused, as OpenAI refuses them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from oasis.protocol.extensions import JsonSchemaFormat, ReasoningEffort


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- Tools ------------------------------------------------------------------------------------------------------


class FunctionDefinition(_Body):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionTool(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class RankingOptions(_Body):
    ranker: Literal["auto", "default_2024_08_21"] | None = None
    score_threshold: float = Field(default=0.0, ge=0.0, le=1.0)


class FileSearchSettings(_Body):
    max_num_results: int | None = Field(default=None, ge=1, le=50)
    ranking_options: RankingOptions | None = None


class FileSearchTool(_Body):
    type: Literal["file_search"]
    file_search: FileSearchSettings | None = None


class CodeInterpreterTool(_Body):
    type: Literal["code_interpreter"]


def _chosen_by_type(tags: dict[str, str]) -> Discriminator:
    """A union chosen by `type`. The tags are the members' class names, which error locations leave out (they
    are capitalised), so a bad field is named `tools[0].function.name` as OpenAI names it."""

    def tag(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        return tags.get(kind) if isinstance(kind, str) else None

    return Discriminator(tag)


Tool = Annotated[
    Annotated[FunctionTool, Tag("FunctionTool")]
    | Annotated[FileSearchTool, Tag("FileSearchTool")]
    | Annotated[CodeInterpreterTool, Tag("CodeInterpreterTool")],
    _chosen_by_type(
        {"function": "FunctionTool", "file_search": "FileSearchTool", "code_interpreter": "CodeInterpreterTool"}
    ),
]
Tools = Annotated[list[Tool], Field(max_length=128)]


class CodeInterpreterResources(_Body):
    file_ids: list[str] = Field(default_factory=list, max_length=20)


class NewVectorStore(_Body):
    """The `vector_stores` helper: a store made from these files when the assistant or thread is created."""

    file_ids: list[str] = Field(default_factory=list, max_length=10000)
    chunking_strategy: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class FileSearchResources(_Body):
    vector_store_ids: list[str] | None = Field(default=None, max_length=1)
    vector_stores: list[NewVectorStore] | None = Field(default=None, max_length=1)


class ToolResources(_Body):
    code_interpreter: CodeInterpreterResources | None = None
    file_search: FileSearchResources | None = None


class FormatChoice(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


ResponseFormatOption = Literal["auto"] | FormatChoice


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function", "code_interpreter", "file_search"]
    function: NamedFunction | None = None


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class TruncationStrategy(_Body):
    type: Literal["auto", "last_messages"]
    last_messages: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _count_given(self) -> TruncationStrategy:
        if self.type == "last_messages" and self.last_messages is None:
            # without it the run would quietly truncate as `auto` does
            raise ValueError("'last_messages' is required when type is last_messages")
        return self


# --- Assistants -------------------------------------------------------------------------------------------------


class CreateAssistantRequest(_Body):
    model: str
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    instructions: str | None = Field(default=None, max_length=256000)
    tools: Tools = Field(default_factory=list)
    tool_resources: ToolResources | None = None
    metadata: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    response_format: ResponseFormatOption | None = None
    reasoning_effort: ReasoningEffort | None = None


class ModifyAssistantRequest(_Body):
    model: str | None = None
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    instructions: str | None = Field(default=None, max_length=256000)
    tools: Tools | None = None
    tool_resources: ToolResources | None = None
    metadata: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    response_format: ResponseFormatOption | None = None
    reasoning_effort: ReasoningEffort | None = None


# --- Messages ---------------------------------------------------------------------------------------------------


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ImageFile(_Body):
    file_id: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageFilePart(_Body):
    type: Literal["image_file"]
    image_file: ImageFile


class ImageUrl(_Body):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImageUrlPart(_Body):
    type: Literal["image_url"]
    image_url: ImageUrl


ContentPart = Annotated[
    Annotated[TextPart, Tag("TextPart")]
    | Annotated[ImageFilePart, Tag("ImageFilePart")]
    | Annotated[ImageUrlPart, Tag("ImageUrlPart")],
    _chosen_by_type({"text": "TextPart", "image_file": "ImageFilePart", "image_url": "ImageUrlPart"}),
]


class AttachmentTool(_Body):
    type: Literal["code_interpreter", "file_search"]


class Attachment(_Body):
    file_id: str
    tools: list[AttachmentTool] = Field(default_factory=list)


MAX_MESSAGE_TEXT = 256000  # the spec's maxLength of a message's content, held to by text parts together too


class CreateMessageRequest(_Body):
    role: Literal["user", "assistant"]
    content: (
        Annotated[str, Field(min_length=1, max_length=MAX_MESSAGE_TEXT)]
        | Annotated[list[ContentPart], Field(min_length=1)]
    )
    attachments: list[Attachment] | None = None
    metadata: dict[str, Any] | None = None

    @field_validator("content")
    @classmethod
    def _text_within_the_limit(cls, content: str | list[Any]) -> str | list[Any]:
        if isinstance(content, list):
            length = sum(len(part.text) for part in content if isinstance(part, TextPart))
            if length > MAX_MESSAGE_TEXT:
                raise ValueError(f"the text parts hold {length:,} characters; at most {MAX_MESSAGE_TEXT:,}")
        return content


class ModifyMessageRequest(_Body):
    metadata: dict[str, Any] | None = None


# --- Threads ----------------------------------------------------------------------------------------------------


class CreateThreadRequest(_Body):
    messages: list[CreateMessageRequest] | None = None
    tool_resources: ToolResources | None = None
    metadata: dict[str, Any] | None = None


class ModifyThreadRequest(_Body):
    tool_resources: ToolResources | None = None
    metadata: dict[str, Any] | None = None


# --- Runs -------------------------------------------------------------------------------------------------------


class _RunSettings(_Body):
    model: str | None = None
    instructions: str | None = Field(default=None, max_length=256000)
    tools: Tools | None = None
    metadata: dict[str, Any] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stream: bool | None = None
    # le: the columns hold 32-bit integers (PostgreSQL's integer), and no model reads more tokens than that
    max_prompt_tokens: int | None = Field(default=None, ge=256, le=2**31 - 1)
    max_completion_tokens: int | None = Field(default=None, ge=256, le=2**31 - 1)
    truncation_strategy: TruncationStrategy | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatOption | None = None
    reasoning_effort: ReasoningEffort | None = None


class CreateRunRequest(_RunSettings):
    assistant_id: str
    additional_instructions: str | None = None
    additional_messages: list[CreateMessageRequest] | None = None


class CreateThreadAndRunRequest(_RunSettings):
    assistant_id: str
    thread: CreateThreadRequest | None = None
    tool_resources: ToolResources | None = None


class ModifyRunRequest(_Body):
    metadata: dict[str, Any] | None = None


class ToolOutput(_Body):
    tool_call_id: str | None = None
    output: str | None = None


class SubmitToolOutputsRequest(_Body):
    tool_outputs: list[ToolOutput]
    stream: bool | None = None
