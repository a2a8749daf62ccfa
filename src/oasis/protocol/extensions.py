"""Documented extensions of the generated wire types.

The vendored spec (2.0.0, May 2024) predates values that OpenAI's API accepts today and that current SDKs
send or expect. Each class here subclasses the generated type and widens exactly one thing, saying why.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, PrivateAttr, model_validator

from oasis.protocol import openapi_types as spec

FilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
    "evals",
]
# user_data: files given to models as input (chat's file parts); evals: OpenAI's evals datasets, kept as files here.
UPLOAD_PURPOSES: tuple[FilePurpose, ...] = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")


class FileObject(spec.OpenAIFile):
    """`OpenAIFile` with the batch and vision purposes that the Batch API and vision uploads added."""

    purpose: FilePurpose  # type: ignore[assignment]
    expires_at: int | None = None  # set by `expires_after`, which OpenAI added after this spec


class FileList(spec.ListFilesResponse):
    """`ListFilesResponse` with the cursor fields that current SDKs page with."""

    data: list[FileObject]  # type: ignore[assignment]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class ModelList(spec.ListModelsResponse):
    """`ListModelsResponse`; OpenAI's list is not paged, but carrying has_more keeps generic pagers happy."""

    has_more: bool = False


# --- Chat completions -----------------------------------------------------------------------------------------
# Newer clients send message content as lists of text parts for every role, a `developer` role, structured
# outputs (`response_format: json_schema`), `max_completion_tokens` and `parallel_tool_calls`; the 2.0.0 spec
# knows none of them. Messages are discriminated by `role`, so an unknown role is named in the 400.

TextParts = list[spec.ChatCompletionRequestMessageContentPartText]


class VoiceId(BaseModel):
    """A voice named by id (`{"id": "voice_1234"}`, OpenAI's custom voices)."""

    model_config = ConfigDict(extra="forbid")

    id: str


class SpokenAnswerRequest(BaseModel):
    """`audio` (after this spec): the voice and format of a spoken answer (`modalities: ["text", "audio"]`)."""

    voice: str | VoiceId
    format: str

    @property
    def voice_name(self) -> str:
        return self.voice if isinstance(self.voice, str) else self.voice.id


class SpokenAnswerReference(BaseModel):
    """An earlier spoken answer, named by the id its `message.audio` carried."""

    id: str


class SystemMessage(spec.ChatCompletionRequestSystemMessage):
    content: str | TextParts  # type: ignore[assignment]


class DeveloperMessage(SystemMessage):
    role: Literal["developer"]  # type: ignore[assignment]


class InputAudioPart(BaseModel):
    type: Literal["input_audio"]
    input_audio: dict[str, Any]


class FilePart(BaseModel):
    type: Literal["file"]
    file: dict[str, Any]


class UserMessage(spec.ChatCompletionRequestUserMessage):
    """Text and image parts (the spec's), and the audio and file parts current SDKs send: a model routed upstream
    reads them as sent; for a local text model file parts become their text (services/chat/file_parts.py) and the
    others are refused by name."""

    content: str | list[spec.ChatCompletionRequestMessageContentPart | InputAudioPart | FilePart]  # type: ignore[assignment]


class RefusalPart(BaseModel):
    """An earlier answer's refusal, as current SDKs send it back in the conversation."""

    type: Literal["refusal"]
    refusal: str


class CustomToolInput(BaseModel):
    name: str
    input: str


class CustomToolCall(BaseModel):
    """A call to a custom tool (after this spec): its input is free text, not JSON arguments."""

    id: str
    type: Literal["custom"]
    custom: CustomToolInput


ToolCall = Annotated[spec.ChatCompletionMessageToolCall | CustomToolCall, Field(discriminator="type")]


class AssistantMessage(spec.ChatCompletionRequestAssistantMessage):
    content: str | list[spec.ChatCompletionRequestMessageContentPartText | RefusalPart] | None = None  # type: ignore[assignment]
    tool_calls: list[ToolCall] | None = None  # type: ignore[assignment]
    audio: SpokenAnswerReference | None = None  # a spoken answer of this server's, sent back by its id


class ToolMessage(spec.ChatCompletionRequestToolMessage):
    content: str | TextParts  # type: ignore[assignment]


class FunctionMessage(spec.ChatCompletionRequestFunctionMessage):
    content: str | None  # type: ignore[assignment]


ChatMessage = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]


class JsonSchemaFormat(BaseModel):
    name: str = Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("`json_schema` is required when type is json_schema")
        return self


ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
REASONING_EFFORTS: tuple[str, ...] = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


class CustomGrammar(BaseModel):
    definition: str
    syntax: Literal["lark", "regex"]


class CustomToolFormat(BaseModel):
    type: Literal["text", "grammar"]
    grammar: CustomGrammar | None = None

    @model_validator(mode="after")
    def _grammar_given(self) -> CustomToolFormat:
        if self.type == "grammar" and self.grammar is None:
            raise ValueError("`grammar` is required when type is grammar")
        return self


class CustomToolDefinition(BaseModel):
    name: str = Field(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str | None = None
    format: CustomToolFormat | None = None  # unconstrained text when absent


class CustomTool(BaseModel):
    """`{"type": "custom", ...}` (after this spec): a tool called with free text, or text in a grammar."""

    type: Literal["custom"]
    custom: CustomToolDefinition


ChatTool = Annotated[spec.ChatCompletionTool | CustomTool, Field(discriminator="type")]


class CustomToolName(BaseModel):
    name: str


class NamedCustomToolChoice(BaseModel):
    """`tool_choice: {"type": "custom", "custom": {"name": ...}}`: the model must call that custom tool."""

    type: Literal["custom"]
    custom: CustomToolName


class AllowedTools(BaseModel):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]] = Field(min_length=1)  # {"type": "function", "function": {"name": ...}}


class AllowedToolsChoice(BaseModel):
    """`tool_choice: {"type": "allowed_tools", ...}` (after this spec): the model may call only these of the tools."""

    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


class _KeepsWhatWasSent(BaseModel):
    """A request that remembers the body it was read from, as sent: an upstream engine receives that, with the
    fields this server's types do not know at every depth (`tools[].function.strict`, a newer content part's
    keys), not the request as read here, which keeps unknown fields at the top level only."""

    _sent: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="wrap")
    @classmethod
    def _remember(cls, data: Any, handler: ModelWrapValidatorHandler[Any]) -> Any:
        request = handler(data)
        if isinstance(data, dict):
            request._sent = data
        return request

    @property
    def sent(self) -> dict[str, Any] | None:
        return self._sent


class ModerationMode(BaseModel):
    mode: Literal["score", "block"]


class ModerationPolicy(BaseModel):
    input: ModerationMode | None = None
    output: ModerationMode | None = None


class ChatModeration(BaseModel):
    """Moderated completions (after this spec): the moderation model that scores the input and the answers, and
    whether a flagged side is only scored or blocked."""

    model: str
    policy: ModerationPolicy | None = None


class ChatCompletionRequest(spec.CreateChatCompletionRequest, _KeepsWhatWasSent):
    # Unknown fields are kept (local engines ignore them) so that an upstream engine receives them.
    model_config = ConfigDict(extra="allow")

    messages: list[ChatMessage] = Field(min_length=1)  # type: ignore[assignment]
    model: str
    response_format: ResponseFormat | None = None  # type: ignore[assignment]
    max_completion_tokens: int | None = Field(default=None, ge=1)
    parallel_tool_calls: bool | None = None
    tools: list[ChatTool] | None = None  # type: ignore[assignment]
    tool_choice: spec.ChatCompletionToolChoiceOption | AllowedToolsChoice | NamedCustomToolChoice | None = None  # type: ignore[assignment]
    # OpenAI's reasoning control (after this spec); a local model's chat template reads it (`none` turns thinking
    # off). Checked against REASONING_EFFORTS for local models only: an upstream may know values added later.
    reasoning_effort: str | None = None
    # vLLM's and llama.cpp's extension: further names for the chat template (Qwen3's `enable_thinking`, say).
    chat_template_kwargs: dict[str, Any] | None = None
    # After this spec: `modalities` with `audio` asks for a spoken answer, in the voice and format of `audio`.
    modalities: list[str] | None = None
    audio: SpokenAnswerRequest | None = None
    moderation: ChatModeration | None = None
    # After this spec: `store: true` keeps the answer for `GET /v1/chat/completions`, with its `metadata`.
    store: bool | None = None
    metadata: dict[str, Any] | None = None

    def with_usage_reported(self) -> ChatCompletionRequest:
        """This streamed request asking for the usage chunk (`stream_options.include_usage`), as read here and in
        the body an upstream receives."""
        options = spec.ChatCompletionStreamOptions(include_usage=True)
        asked = self.model_copy(update={"stream_options": options})
        if self._sent is not None:
            asked._sent = {
                **self._sent,
                "stream_options": {**(self._sent.get("stream_options") or {}), "include_usage": True},
            }
        return asked

    def streamed(self) -> ChatCompletionRequest:
        """This request streamed, with the usage chunk asked for (in the body an upstream receives too)."""
        streamed = self.model_copy(update={"stream": True})
        if self._sent is not None:
            streamed._sent = {**self._sent, "stream": True}
        return streamed.with_usage_reported()


class ChatCompletionUpdate(BaseModel):
    """`POST /v1/chat/completions/{id}` (after this spec): a stored completion's metadata is all that changes."""

    metadata: dict[str, Any] | None


class CompletionRequest(spec.CreateCompletionRequest, _KeepsWhatWasSent):
    model_config = ConfigDict(extra="allow")

    model: str


class SpeechRequest(spec.CreateSpeechRequest):
    """Voices are the engine's to judge (OpenAI added ash, ballad, coral, sage and verse after this spec, and
    voices named by id); newer fields such as `instructions` are accepted."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str
    voice: str | VoiceId  # type: ignore[assignment]
    stream_format: str = "audio"  # audio or sse: the service judges it, as sse depends on the model's name

    @property
    def voice_name(self) -> str:
        return self.voice if isinstance(self.voice, str) else self.voice.id


# --- Vector stores ----------------------------------------------------------------------------------------------
# Today's API adds `chunking_strategy` (auto or static sizes) to the create requests, `attributes` to files (used by
# search filters) and a search operation; a file's `last_error.code` is one of server_error, unsupported_file,
# invalid_file. The spec's create requests forbid extra fields, so these subclasses add the new ones.


class ChunkingStrategyRequest(BaseModel):
    type: Literal["auto", "static"]
    static: dict[str, Any] | None = None


class CreateVectorStoreRequest(spec.CreateVectorStoreRequest):
    chunking_strategy: ChunkingStrategyRequest | None = None
    description: str | None = None


class UpdateVectorStoreRequest(spec.UpdateVectorStoreRequest):
    pass


class CreateVectorStoreFileRequest(spec.CreateVectorStoreFileRequest):
    chunking_strategy: ChunkingStrategyRequest | None = None
    attributes: dict[str, Any] | None = None


class UpdateVectorStoreFileRequest(BaseModel):
    """`POST /vector_stores/{id}/files/{file_id}` (after this spec): a file's attributes, replaced whole."""

    model_config = ConfigDict(extra="forbid")
    attributes: dict[str, Any] | None


class FileBatchEntry(BaseModel):
    """One file of a batch with its own attributes and chunking (the newer `files` list)."""

    model_config = ConfigDict(extra="forbid")
    file_id: str
    attributes: dict[str, Any] | None = None
    chunking_strategy: ChunkingStrategyRequest | None = None


# OpenAI's batches now take up to 2000 files (the spec said 500).
MAX_BATCH_FILES = 2000


class CreateVectorStoreFileBatchRequest(spec.CreateVectorStoreFileBatchRequest):
    """`file_ids` (sharing the batch's attributes and chunking) or `files` (each with its own; the batch's are then
    ignored, as OpenAI ignores them), not both."""

    file_ids: list[str] | None = Field(default=None, min_length=1, max_length=MAX_BATCH_FILES)  # type: ignore[assignment]
    files: list[FileBatchEntry] | None = Field(default=None, min_length=1, max_length=MAX_BATCH_FILES)
    chunking_strategy: ChunkingStrategyRequest | None = None
    attributes: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_list(self) -> CreateVectorStoreFileBatchRequest:
        if (self.file_ids is None) == (self.files is None):
            raise ValueError("give one of `file_ids` or `files`")
        return self


class RankingOptions(BaseModel):
    ranker: Literal["auto", "default-2024-11-15", "none"] | None = None
    score_threshold: float = Field(default=0.0, ge=0.0, le=1.0)


class VectorStoreSearchRequest(BaseModel):
    """`POST /vector_stores/{id}/search`, which OpenAI added after this spec."""

    model_config = ConfigDict(extra="forbid")

    # Each query is embedded and searched apart: bounded as embeddings' inputs are.
    query: str | Annotated[list[str], Field(max_length=2048)]
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: dict[str, Any] | None = None
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False


# --- Batches ----------------------------------------------------------------------------------------------------
# The spec writes the create body inline; this names it.


# OpenAI's bounds on a file's `expires_after` and a batch's `output_expires_after`: an hour to thirty days.
MIN_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 30 * 24 * 3600


class OutputExpiresAfter(BaseModel):
    """How long after their creation a batch's output and error files expire."""

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: int = Field(ge=MIN_EXPIRY_SECONDS, le=MAX_EXPIRY_SECONDS)


class CreateBatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None = None
    output_expires_after: OutputExpiresAfter | None = None


class FineTuningMethod(BaseModel):
    """The newer `method` (`supervised`, `dpo`, `reinforcement`), each with its own hyperparameters."""

    model_config = ConfigDict(extra="allow")
    type: str
    supervised: dict[str, Any] | None = None


# The spec's schema takes 40 characters (its text says 18); OpenAI's API takes 64 now, as current SDKs document.
MAX_FINE_TUNING_SUFFIX = 64


class CreateFineTuningJobRequest(spec.CreateFineTuningJobRequest):
    """`CreateFineTuningJobRequest` with the `method` and `metadata` that current SDKs send, and the suffix as
    long as OpenAI takes it."""

    method: FineTuningMethod | None = None
    metadata: dict[str, Any] | None = None
    suffix: Annotated[str, Field(min_length=1, max_length=MAX_FINE_TUNING_SUFFIX)] | None = None


class ModerationTextPart(BaseModel):
    type: Literal["text"]
    text: str


class ModerationImagePart(BaseModel):
    type: Literal["image_url"]
    image_url: dict[str, Any]


class CreateModerationRequest(spec.CreateModerationRequest):
    """`CreateModerationRequest` with the typed parts (text, image_url) and any model name that current SDKs send
    (`omni-moderation-latest`, or a model this server is configured with)."""

    input: str | list[str] | list[ModerationTextPart | ModerationImagePart]  # type: ignore[assignment]
    model: str | None = "text-moderation-latest"


class CreateImageRequest(spec.CreateImageRequest):
    """`CreateImageRequest` with what OpenAI added for its GPT image models (`gpt-image-1` and later): their
    sizes and qualities (checked by the service, per model name), the output file's format and compression,
    the background, the moderation level, and streaming."""

    quality: str | None = None  # type: ignore[assignment]
    size: str | None = None  # type: ignore[assignment]
    response_format: Literal["url", "b64_json"] | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: int | None = Field(None, ge=0, le=100)
    moderation: Literal["low", "auto"] | None = None
    stream: bool | None = None
    partial_images: int | None = Field(None, ge=0, le=3)
