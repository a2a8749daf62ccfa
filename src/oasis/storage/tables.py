"""SQLAlchemy tables. Every object a client can see carries `project_id`, and every lookup filters on it.

Listable objects have an integer `seq` primary key that only grows: it is the pagination order and the
tie-breaker for objects created in the same second. Deleting keeps a tombstone (`deleted_at`) so that a
client paging with `after=<an id it just deleted>` still gets the next page.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL wants a 64-bit identity.
SeqType = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    redacted: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # may list, create and revoke its project's keys over HTTP (made only by `oasis keys create --manage-keys`)
    manages_keys: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class StoredFile(Base):
    __tablename__ = "files"
    __table_args__ = (
        Index("ix_files_project_seq", "project_id", "seq"),
        Index("ix_files_expiry", "deleted_at", "expires_at"),  # the live files past their expires_at
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    filename: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    status_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    blob_key: Mapped[str] = mapped_column(String(200))
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Past it the file is gone, as if deleted (`expires_after`); the expiry job then deletes it.
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Upload(Base):
    """A file sent in parts (the Uploads API, after the 2.0.0 spec): pending for an hour, then completed into a
    file, cancelled, or expired."""

    __tablename__ = "uploads"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    filename: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    mime_type: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # pending, completed or cancelled (expired: read off the time)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    # Seconds after its creation that the file made from it expires (`expires_after`); None: as a plain upload.
    file_expires_after: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class StoredChatCompletion(Base):
    """A chat completion made with `store: true` (after the 2.0.0 spec): the answer, the request's settings and
    its input messages, for `GET /v1/chat/completions`. Deleting one empties it and keeps the tombstone."""

    __tablename__ = "chat_completions"
    __table_args__ = (
        Index("ix_chat_completions_project_seq", "project_id", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(200))
    completion_json: Mapped[str] = mapped_column(Text)  # the answer with the request's settings
    messages_json: Mapped[str] = mapped_column(Text)  # the input messages as listed
    metadata_json: Mapped[str] = mapped_column(Text)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class StoredChatCompletionTag(Base):
    """One metadata pair of a stored chat completion, a row of its own so that lists filter on it in SQL."""

    __tablename__ = "chat_completion_metadata"
    __table_args__ = (Index("ix_chat_completion_metadata_pair", "key", "value"),)

    completion_seq: Mapped[int] = mapped_column(SeqType, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StoredResponse(Base):
    """A response of the Responses API (after the 2.0.0 spec) made with `store` on (its default): the answer, its
    input items as listed, and its turn of the conversation that a later response continues (`previous_response_id`
    names the turns before)."""

    __tablename__ = "responses"
    __table_args__ = (Index("ix_responses_jobs", "status", "lease_expires_at"), {"sqlite_autoincrement": True})

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    previous_response_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    response_json: Mapped[str] = mapped_column(Text)
    input_items_json: Mapped[str] = mapped_column(Text)
    # This turn's chat messages, its input's and its answer's, without the instructions (which a later response
    # does not keep): each row holds its own turn, so a long chain is stored once, not once a turn.
    conversation_json: Mapped[str] = mapped_column(Text)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The response's status; a background response (`background`) is also the job that generates it (DESIGN.md
    # habit 8): workers lease the row while it is queued or in progress, and read the request as it was sent.
    status: Mapped[str] = mapped_column(String(16), default="completed", server_default="completed")
    background: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    request_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The sequence number its next event takes: numbers are never used twice, not even by a generation started
    # again after a crash, so a client's `starting_after` always names one event.
    next_event: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Where a background response's generation had got to after its latest built-in tool call (the output so far and
    # what the model was shown): a generation taken over after a crash resumes there, and makes no call twice.
    checkpoint_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class ResponseEvent(Base):
    """One streamed event of a background response, kept so that a client can stream it from any replica and
    reconnect after `sequence_number` N (`starting_after`). `generation`: the execution that wrote it (its lease
    owner's name, never used twice); a generation taken over after a crash starts again, the dead one's events
    removed."""

    __tablename__ = "response_events"
    __table_args__ = (Index("ix_response_events_response", "response_id", "seq"), {"sqlite_autoincrement": True})

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    response_id: Mapped[str] = mapped_column(String(64))
    generation: Mapped[str] = mapped_column(String(64))
    sequence_number: Mapped[int] = mapped_column(Integer)
    event_json: Mapped[str] = mapped_column(Text)


class CodeContainer(Base):
    """A container of the Containers API: the code_interpreter tool's Python session (a sandbox session while it
    lives) and the files in its /mnt/data, kept here so that a session started again finds them. It expires when
    unused for `expires_minutes` after `last_active_at`, its files with it."""

    __tablename__ = "containers"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[int] = mapped_column(BigInteger)
    last_active_at: Mapped[int] = mapped_column(BigInteger)
    expires_minutes: Mapped[int] = mapped_column(Integer)
    memory_limit: Mapped[str | None] = mapped_column(String(8), nullable=True)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ContainerFile(Base):
    """A file in a container's /mnt/data: given by the client (`source: user`) or written by its code
    (`assistant`); its bytes in the blob store."""

    __tablename__ = "container_files"
    __table_args__ = (
        Index("ix_container_files_container", "container_id", "seq"),
        # One live file at a path, even when two are written there at the same moment.
        Index(
            "uq_container_files_live_path",
            "container_id",
            "path",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index("ix_container_files_blob_key", "blob_key"),  # the blob sweep's lookups
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    container_id: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    blob_key: Mapped[str] = mapped_column(String(256))
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Conversation(Base):
    """A conversation of the Responses API (after the 2.0.0 spec): its items are read before a response's input
    when the response names it, and the response's input and output items join them."""

    __tablename__ = "conversations"
    __table_args__ = ({"sqlite_autoincrement": True},)

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    metadata_json: Mapped[str] = mapped_column(Text)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ConversationItem(Base):
    """One item of a conversation, whole (a search's results included, which a listing shows only when asked), in
    the order `seq` gives."""

    __tablename__ = "conversation_items"
    __table_args__ = (
        Index("ix_conversation_items_conversation", "conversation_id", "seq"),
        UniqueConstraint("conversation_id", "id", name="uq_conversation_items_id"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64))
    conversation_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    item_json: Mapped[str] = mapped_column(Text)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class UploadPart(Base):
    """One part of an upload, its bytes a blob of their own until the upload ends."""

    __tablename__ = "upload_parts"
    __table_args__ = (Index("ix_upload_parts_upload", "upload_id"), {"sqlite_autoincrement": True})

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    upload_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    blob_key: Mapped[str] = mapped_column(String(200))


class OwnedModel(Base):
    """A model that belongs to a project (a fine-tune result); configured models live in settings."""

    __tablename__ = "models"
    __table_args__ = (
        Index("ix_models_project_seq", "project_id", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(200), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    owned_by: Mapped[str] = mapped_column(String(200))
    base_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    artifact_blob_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class VectorStore(Base):
    __tablename__ = "vector_stores"
    __table_args__ = (
        Index("ix_vector_stores_project_seq", "project_id", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[int] = mapped_column(BigInteger)
    metadata_json: Mapped[str] = mapped_column(Text)
    # The model that embedded its chunks: questions must be embedded by the same one.
    embedding_model: Mapped[str] = mapped_column(String(200))
    expires_after_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_active_at: Mapped[int] = mapped_column(BigInteger)
    # Grows whenever the store's searchable chunks change; replicas rebuild cached indexes when it moves.
    content_version: Mapped[int] = mapped_column(BigInteger, default=0)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class VectorStoreFileBatch(Base):
    __tablename__ = "vector_store_file_batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    vector_store_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class VectorStoreFile(Base):
    """A file attached to a store, and the ingestion job for it (DESIGN.md habit 8): workers lease the row."""

    __tablename__ = "vector_store_files"
    __table_args__ = (
        Index("ix_vector_store_files_store_seq", "vector_store_id", "seq"),
        Index("ix_vector_store_files_jobs", "status", "lease_expires_at"),
        # A file is attached to a store once at a time: concurrent adds cannot index it twice.
        Index(
            "uq_vector_store_files_live",
            "vector_store_id",
            "id",
            unique=True,
            sqlite_where=text("deleted_at IS NULL"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64))  # the file's id, as OpenAI names a vector store file
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    vector_store_id: Mapped[str] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    last_error_code: Mapped[str | None] = mapped_column(String(32), nullable=True)
    last_error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    usage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    chunk_size_tokens: Mapped[int] = mapped_column(Integer)
    chunk_overlap_tokens: Mapped[int] = mapped_column(Integer)
    chunking_type: Mapped[str] = mapped_column(String(16))
    attributes_json: Mapped[str] = mapped_column(Text, default="{}")
    # Ingestion progress: chunks below this position are committed, so a resumed job starts here.
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class VectorStoreChunk(Base):
    __tablename__ = "vector_store_chunks"
    __table_args__ = (
        UniqueConstraint("file_seq", "position", name="uq_vector_store_chunks_file_position"),
        Index("ix_vector_store_chunks_store", "vector_store_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    vector_store_id: Mapped[str] = mapped_column(String(64))
    file_seq: Mapped[int] = mapped_column(BigInteger)  # the VectorStoreFile row (one attachment of a file)
    file_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # little-endian float32, unit length


class BatchJob(Base):
    """A batch, and the job that runs it (DESIGN.md habit 8): workers lease the row."""

    __tablename__ = "batches"
    __table_args__ = (
        Index("ix_batches_project_seq", "project_id", "seq"),
        Index("ix_batches_jobs", "status", "lease_expires_at"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(64))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    output_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Seconds after their creation that the output and error files expire (`output_expires_after`); None: never.
    output_expires_after: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # The address the batch's creator reached oasis at: links in its answers (image URLs) start with it.
    base_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    errors_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    metadata_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    in_progress_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires_at: Mapped[int] = mapped_column(BigInteger)
    finalizing_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expired_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cancelling_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    total: Mapped[int] = mapped_column(Integer, default=0)
    completed: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The model every line asks for (as they name it), found at validation; None while validating or when lines
    # ask for several.
    model: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Tokens of the answered requests (`usage`), added in the transaction that stores each result.
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class BatchResult(Base):
    """One finished request of a batch; at most one per input line, so a resumed batch never runs a line twice."""

    __tablename__ = "batch_results"
    __table_args__ = (UniqueConstraint("batch_seq", "line", name="uq_batch_results_line"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    batch_seq: Mapped[int] = mapped_column(BigInteger)
    line: Mapped[int] = mapped_column(Integer)
    custom_id: Mapped[str] = mapped_column(Text)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int] = mapped_column(Integer)
    request_id: Mapped[str] = mapped_column(String(64))
    body_json: Mapped[str] = mapped_column(Text)


# --- Assistants -------------------------------------------------------------------------------------------------
# Nested fields (tools, content parts, step details) are kept as the JSON the wire carries: they are read and
# written whole, never queried inside.

# Statuses of a run that is still going: at most one such run per thread.
ACTIVE_RUN_STATUSES = ("queued", "in_progress", "requires_action", "cancelling")


class Assistant(Base):
    __tablename__ = "assistants"
    __table_args__ = (
        Index("ix_assistants_project_seq", "project_id", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str | None] = mapped_column(Text, nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str | None] = mapped_column(Text, nullable=True)
    tools_json: Mapped[str] = mapped_column(Text)
    tool_resources_json: Mapped[str] = mapped_column(Text)
    metadata_json: Mapped[str] = mapped_column(Text)
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    top_p: Mapped[float | None] = mapped_column(Float, nullable=True)
    response_format_json: Mapped[str] = mapped_column(Text)
    # `reasoning_effort` for its runs' chat template (a reasoning model's); None: the template's own default.
    reasoning_effort: Mapped[str | None] = mapped_column(String(16), nullable=True)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Thread(Base):
    __tablename__ = "threads"
    __table_args__ = (
        Index("ix_threads_project_seq", "project_id", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    tool_resources_json: Mapped[str] = mapped_column(Text)
    metadata_json: Mapped[str] = mapped_column(Text)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ThreadMessage(Base):
    __tablename__ = "thread_messages"
    __table_args__ = (
        Index("ix_thread_messages_thread_seq", "thread_id", "seq"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    thread_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    role: Mapped[str] = mapped_column(String(16))
    content_json: Mapped[str] = mapped_column(Text)
    attachments_json: Mapped[str] = mapped_column(Text)
    metadata_json: Mapped[str] = mapped_column(Text)
    assistant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16))
    incomplete_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    incomplete_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Run(Base):
    """A run, and the job that executes it (DESIGN.md habit 8): workers lease the row."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_thread_seq", "thread_id", "seq"),
        Index("ix_runs_jobs", "status", "lease_expires_at"),
        # One live run per thread, even when two requests start one at the same moment.
        Index(
            "uq_runs_one_active",
            "thread_id",
            unique=True,
            sqlite_where=text("status IN ('queued', 'in_progress', 'requires_action', 'cancelling')"),
            postgresql_where=text("status IN ('queued', 'in_progress', 'requires_action', 'cancelling')"),
        ),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    thread_id: Mapped[str] = mapped_column(String(64))
    assistant_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str] = mapped_column(Text)
    # Read by the run only: the extra messages are in the thread already, these are appended to the prompt.
    additional_instructions: Mapped[str | None] = mapped_column(Text, nullable=True)
    tools_json: Mapped[str] = mapped_column(Text)
    tool_resources_json: Mapped[str] = mapped_column(Text)
    metadata_json: Mapped[str] = mapped_column(Text)
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    top_p: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    truncation_json: Mapped[str] = mapped_column(Text)
    tool_choice_json: Mapped[str] = mapped_column(Text)
    response_format_json: Mapped[str] = mapped_column(Text)
    reasoning_effort: Mapped[str | None] = mapped_column(String(16), nullable=True)
    parallel_tool_calls: Mapped[bool] = mapped_column(Boolean, default=True)
    required_action_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_error_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    incomplete_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RunStep(Base):
    __tablename__ = "run_steps"
    __table_args__ = (
        Index("ix_run_steps_run_seq", "run_id", "seq"),
        Index("ix_run_steps_thread", "thread_id"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    thread_id: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[str] = mapped_column(String(64))
    assistant_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    step_details_json: Mapped[str] = mapped_column(Text)
    last_error_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The thread's newest message when the step began: a tool call is shown to the model right after it.
    after_message_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    cancelled_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    failed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    completed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    expired_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    deleted_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


# --- Fine-tuning ------------------------------------------------------------------------------------------------

# Statuses of a fine-tuning job that a worker still has to act on.
TRAINING_STATUSES = ("validating_files", "queued", "running")
# Statuses of a job that has not ended: a paused one (newer SDKs' `pause`) keeps its files and saved training state
# for its `resume`, and can still be cancelled.
UNFINISHED_STATUSES = (*TRAINING_STATUSES, "paused")


class FineTuningJob(Base):
    """A fine-tuning job, and the job that trains it (DESIGN.md habit 8): workers lease the row; each checkpoint
    is committed as training reaches it, so a worker that dies resumes from the last one, not from zero."""

    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (
        Index("ix_fine_tuning_jobs_project_seq", "project_id", "seq"),
        Index("ix_fine_tuning_jobs_jobs", "status", "lease_expires_at"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    model: Mapped[str] = mapped_column(String(200))  # as the request named it
    base_model: Mapped[str] = mapped_column(String(200))  # the configured model it names
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    hyperparameters_json: Mapped[str] = mapped_column(Text)  # as asked ("auto" until the files are read)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(BigInteger)
    integrations_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    metadata_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(24))
    fine_tuned_model: Mapped[str | None] = mapped_column(String(300), nullable=True)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_files_json: Mapped[str] = mapped_column(Text, default="[]")
    # Where training resumes after a crash: the newest saved step, and its adapter and trainer state (one blob)
    resume_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resume_blob_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class FineTuningEvent(Base):
    __tablename__ = "fine_tuning_events"
    __table_args__ = (Index("ix_fine_tuning_events_job_seq", "job_id", "seq"), {"sqlite_autoincrement": True})

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))  # "message" or "metrics"
    data_json: Mapped[str | None] = mapped_column(Text, nullable=True)


class FineTuningCheckpoint(Base):
    """A checkpoint at the end of an epoch: the adapter at that step, itself a servable model."""

    __tablename__ = "fine_tuning_checkpoints"
    __table_args__ = (
        Index("ix_fine_tuning_checkpoints_job_seq", "job_id", "seq"),
        UniqueConstraint("job_id", "step_number", name="uq_fine_tuning_checkpoints_step"),
        {"sqlite_autoincrement": True},
    )

    seq: Mapped[int] = mapped_column(SeqType, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    job_id: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    created_at: Mapped[int] = mapped_column(BigInteger)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(300), unique=True)
    step_number: Mapped[int] = mapped_column(Integer)
    metrics_json: Mapped[str] = mapped_column(Text)
    adapter_blob_key: Mapped[str] = mapped_column(String(200))


class SpokenAnswer(Base):
    """The transcript of a spoken chat answer (`message.audio`), until its `expires_at`: a later request names the
    answer by its id alone (`{"role": "assistant", "audio": {"id": ...}}`), and a text model reads the transcript."""

    __tablename__ = "spoken_answers"
    __table_args__ = (Index("ix_spoken_answers_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    transcript: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[int] = mapped_column(BigInteger)
