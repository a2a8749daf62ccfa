"""Typed settings: defaults < config file (YAML) < environment (OASIS_ prefix, `__` nests) < command line."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import platformdirs
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

MIB = 1024 * 1024


class ConfigError(ValueError):
    """A mistake in the configuration, said in one plain line that names the file, the model and the option."""


def _is_secret(option: str) -> bool:
    return any(word in option.lower() for word in ("key", "token", "secret", "password"))


class _Section(BaseModel):
    # A misspelt key anywhere in the file stops the start, as at the top: ignored, it would leave a default.
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Section):
    """One served model, as named in the config file's `models:` list."""

    id: str = Field(description="The id clients send as `model`.")
    engine: str = Field(description="Engine kind, a key of the engine registry (e.g. `llamacpp`, `upstream`).")
    path: str | None = Field(default=None, description="Where the weights are on disk.")
    package: str | None = Field(default=None, description="An installed Python package that ships the weights.")
    train_from: str | None = Field(
        default=None,
        description="Fine-tuning: a Hugging Face folder (config.json, safetensors, tokenizer) holding the same network "
        "as the GGUF, trained instead of reading the GGUF (full precision, faster to load); the result is still "
        "merged into the GGUF.",
    )
    aliases: list[str] = Field(default_factory=list, description="Other ids that resolve to this model.")
    options: dict[str, Any] = Field(default_factory=dict, description="Engine-specific options.")
    owned_by: str = "oasis"

    def __repr_args__(self) -> Any:
        # Options may hold an upstream's api_key: a spec that reaches a log or a traceback shows no secret.
        for name, value in super().__repr_args__():
            if name == "options" and isinstance(value, dict):
                value = {key: "**********" if _is_secret(key) else option for key, option in value.items()}
            yield name, value

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a model id must not be blank")
        return value


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    allow_unauthenticated: bool = Field(
        default=False,
        description="Accept any bearer from any address while no API key exists (otherwise loopback only).",
    )
    max_json_body_bytes: int = Field(
        default=32 * MIB,
        gt=0,
        description="Largest request body that is not a file upload (JSON is parsed whole in memory).",
    )
    metrics_token: SecretStr | None = Field(
        default=None, description="When set, `GET /metrics` needs it as a bearer (project keys do not open it)."
    )


class FilesSettings(_Section):
    max_upload_bytes: int = Field(default=512 * MIB, gt=0, description="Largest file `POST /v1/files` accepts.")
    batch_expiry_seconds: int | None = Field(
        default=30 * 24 * 3600,
        ge=3600,
        description="How long an uploaded `batch` file lives when its upload names no `expires_after` (OpenAI's "
        "30 days); null keeps such files until they are deleted.",
    )


class ChatSettings(_Section):
    audio_transcription_model: str = Field(
        default="whisper-1",
        description="The transcription model (id or alias) that hears a chat request's input_audio parts for a "
        "local text model: the transcript takes the part's place.",
    )
    speech_model: str = Field(
        default="tts-1",
        description="The speech model (id or alias) that speaks a local text model's answer when a request's "
        "`modalities` holds `audio`.",
    )
    spoken_answer_seconds: int = Field(
        default=3600,
        ge=1,
        description="How long a spoken answer's transcript is kept, so that a later request may name the answer "
        "by its `audio.id` (its `expires_at`).",
    )


class VectorStoreSettings(_Section):
    embedding_model: str = Field(
        default="text-embedding-3-small", description="The model (id or alias) that embeds new stores' chunks."
    )
    index_threshold: int = Field(
        default=50_000, ge=1, description="Stores with at least this many chunks are searched through an HNSW index."
    )
    search_cache_mb: float = Field(
        default=1024,
        ge=0,
        description="Memory for the vectors of recently searched stores; the least recently searched go first.",
    )


class WorkerSettings(_Section):
    in_process: bool = Field(default=True, description="`oasis serve` runs background jobs itself.")
    poll_seconds: float = Field(default=1.0, gt=0, description="How often an idle worker looks for new jobs.")
    batch_concurrency: int = Field(
        default=8, ge=1, description="Requests of one batch in flight at once: match the engine's parallel slots."
    )
    run_concurrency: int = Field(
        default=16, ge=1, description="Assistants runs one worker executes at once (streamed runs are not counted)."
    )
    response_concurrency: int = Field(
        default=16, ge=1, description="Background responses one worker generates at once."
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a job stays claimed after its worker stops renewing it (a crash) before another "
        "worker may take it.",
    )
    sweep_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often a worker removes blobs no row points to and unfinished writes (also at its start).",
    )


class CodeInterpreterSettings(_Section):
    call_seconds: float = Field(
        default=60.0, gt=0, description="Wall clock for one call; past it the sandbox is killed."
    )
    idle_seconds: float = Field(
        default=600.0, gt=0, description="A thread's Python session closes after this idle time."
    )
    max_sessions: int = Field(
        default=8, ge=1, description="Sessions one process keeps; past it, the least recently used closes."
    )
    memory_mb: int = Field(default=1024, ge=64, description="Address space of each session's processes.")
    max_memory_mb: int | None = Field(
        default=16384,
        ge=64,
        description="The most a container's `memory_limit` may give its session's processes (a larger one asked "
        "for is refused); unset: any of OpenAI's sizes, up to 64g.",
    )
    cpu_seconds: int = Field(default=600, ge=1, description="CPU time of a session over its whole life.")
    processes: int = Field(default=32, ge=2, description="Processes and threads a session may run at once.")
    file_mb: int = Field(default=100, ge=1, description="Largest file the code may write.")
    folder_mb: int = Field(default=256, ge=1, description="Size of a session's /mnt/data (held in memory).")


class ImagesSettings(_Section):
    url_secret: SecretStr | None = Field(
        default=None,
        description="Signs the links of generated images; unset: one is made and kept in the blob store.",
    )
    public_url: str | None = Field(
        default=None,
        description="The address clients reach oasis at, for image links (e.g. behind a proxy); unset: the "
        "address the request came to.",
    )


class PromptMessage(_Section):
    role: Literal["developer", "system", "user", "assistant"]
    content: str = Field(description="Text; `{{name}}` stands for the variable `name` a response gives.")


class PromptSpec(_Section):
    """A reusable prompt, as OpenAI's dashboard keeps them: a response names it as `prompt: {"id", "version",
    "variables"}`, and the model reads its messages before the conversation, as instructions."""

    id: str = Field(min_length=1, description="What responses name it by (OpenAI's are `pmpt_…`).")
    version: str = Field(default="1", min_length=1, description="A response names none: the highest version.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value  # `version: 2` in YAML

    model: str | None = Field(default=None, description="The model of a response that names none.")
    instructions: str | None = Field(default=None, description="Read as a developer message, first.")
    messages: list[PromptMessage] = Field(default_factory=list, description="Read after the instructions.")


class ResponsesSettings(_Section):
    mcp_server_urls: list[str] | None = Field(
        default=None,
        description="What the Responses API's `mcp` tool may reach: URL prefixes (e.g. http://127.0.0.1:8931/); "
        "unset: any URL a request names (oasis connects to it); an empty list: none.",
    )
    prompts: list[PromptSpec] = Field(default_factory=list, description="Prompts responses name by `prompt.id`.")

    @model_validator(mode="after")
    def _prompt_versions_unique(self) -> ResponsesSettings:
        seen: set[tuple[str, str]] = set()
        for prompt in self.prompts:
            if (prompt.id, prompt.version) in seen:
                raise ValueError(f"prompt {prompt.id!r} version {prompt.version!r} is named twice in responses.prompts")
            seen.add((prompt.id, prompt.version))
        return self


class FineTuningSettings(_Section):
    """How `oasis serve` (in process) and `oasis worker` train fine-tuning jobs: a trainer subprocess per job."""

    launcher: list[str] = Field(
        default_factory=list,
        description="The command that starts the trainer, before `-m oasis.engines.training JOB_DIR`: empty is "
        "this Python; another Python that has the `train` extra (e.g. [/opt/train/bin/python]), or a launcher "
        "such as [accelerate, launch].",
    )
    threads: int | None = Field(default=None, ge=1, description="CPU threads the trainer uses (default: every core).")
    checkpoint_every: int = Field(
        default=10, ge=1, description="Steps between saved training states: a killed worker resumes from the last."
    )
    max_length: int = Field(default=2048, ge=16, description="Tokens of one training example; longer are cut.")
    max_loaded_models: int = Field(
        default=2, ge=1, description="Fine-tuned models held loaded at once; the least recently used is unloaded."
    )


class BlobSettings(_Section):
    """Where uploaded files and results live: a folder in the data dir, or an S3 bucket that replicas share."""

    kind: Literal["local", "s3"] = Field(default="local", description="`local` (the data dir) or `s3`.")
    bucket: str | None = Field(default=None, description="The S3 bucket (kind s3); it must exist.")
    prefix: str = Field(default="", description="A folder inside the bucket for oasis's objects.")
    endpoint_url: str | None = Field(
        default=None, description="An S3-compatible server (MinIO, SeaweedFS, Ceph); unset: AWS."
    )
    region: str = Field(default="us-east-1", description="The bucket's region.")
    access_key_id: SecretStr | None = Field(
        default=None, description="Unset: the AWS default chain (AWS_ACCESS_KEY_ID, profiles, instance roles)."
    )
    secret_access_key: SecretStr | None = Field(default=None, description="Paired with access_key_id.")
    path_style: bool = Field(default=False, description="Address the bucket in the path (most S3-compatible servers).")
    part_mb: int = Field(
        default=8, ge=5, le=5120, description="Multipart upload part size: at most this much of a file is in memory."
    )

    @model_validator(mode="after")
    def _bucket_for_s3(self) -> BlobSettings:
        if self.kind == "s3" and not self.bucket:
            raise ValueError("blobs.bucket is needed when blobs.kind is s3")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("blobs.access_key_id and blobs.secret_access_key go together")
        return self


class Limits(_Section):
    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests a minute; unset: no limit.")
    tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Tokens a minute, counted when a request is admitted: its prompt (about 4 characters a token) "
        "plus its max_tokens times n; unset: no limit.",
    )


class RateLimitSettings(Limits):
    """Every project's limits (the fields inherited), and those of named projects and keys: a key's own limits
    replace its project's."""

    projects: dict[str, Limits] = Field(default_factory=dict, description="By project name (or id).")
    keys: dict[str, Limits] = Field(default_factory=dict, description="By key id (`key_…`, as `oasis keys list`).")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OASIS_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("oasis")),  # $OASIS_DATA_DIR: the env source
        description="Holds the SQLite database and the blobs.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="The database: postgresql://user:password@host/db (or any SQLAlchemy async URL); unset means "
        "SQLite in the data dir.",
    )
    server: ServerSettings = Field(default_factory=ServerSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    chat: ChatSettings = Field(default_factory=ChatSettings)
    blobs: BlobSettings = Field(default_factory=BlobSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    redis_url: SecretStr | None = Field(
        default=None,
        description="Redis, to count rate limits across replicas (e.g. redis://127.0.0.1:6379/0); unset: counted "
        "in each process.",
    )
    vector_stores: VectorStoreSettings = Field(default_factory=VectorStoreSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    code_interpreter: CodeInterpreterSettings = Field(default_factory=CodeInterpreterSettings)
    fine_tuning: FineTuningSettings = Field(default_factory=FineTuningSettings)
    images: ImagesSettings = Field(default_factory=ImagesSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    models: list[ModelSpec] = Field(
        default_factory=list,
        description="Served models, besides the defaults: an entry with a default's id replaces it, and the ids "
        "and aliases an entry names are taken from the defaults.",
    )
    defaults: bool = Field(
        default=True, description="Also serve the default models whose weights are installed (`false`: only `models`)."
    )

    @field_validator("data_dir")
    @classmethod
    def _home_expanded(cls, value: Path) -> Path:
        return value.expanduser()  # `~/oasis-data` in a YAML file is the home folder, as in a shell

    @model_validator(mode="after")
    def _model_ids_unique(self) -> Settings:
        seen: set[str] = set()
        for spec in self.models:
            for name in (spec.id, *spec.aliases):
                if name in seen:
                    raise ValueError(f"model id or alias {name!r} is named twice in `models`")
                seen.add(name)
        return self

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url is not None:
            return async_driver_url(self.database_url.get_secret_value())
        return f"sqlite+aiosqlite:///{self.data_dir / 'oasis.db'}"

    @property
    def blobs_dir(self) -> Path:
        return self.data_dir / "blobs"


# The URL forms users copy from other tools, and the async driver oasis installs for each.
_ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}


def async_driver_url(url: str) -> str:
    """`postgresql://…` (or `postgres://`, `sqlite://`) with the async driver oasis ships; other URLs as given.
    libpq's `sslmode=` is asyncpg's `ssl=`."""
    scheme, separator, rest = url.partition("://")
    if not separator or scheme not in _ASYNC_DRIVERS:
        return url
    driver = _ASYNC_DRIVERS[scheme]
    if driver.endswith("asyncpg"):
        rest = re.sub(r"([?&])sslmode=", r"\1ssl=", rest)
    return f"{driver}://{rest}"


def default_data_dir() -> Path:
    return Path(os.environ.get("OASIS_DATA_DIR") or platformdirs.user_data_dir("oasis"))


def config_file(explicit: Path | None, data_dir: Path | None) -> Path | None:
    """The config file to read: `--config`, else $OASIS_CONFIG, else `config.yaml` in the data dir if it exists."""
    if explicit is not None:
        return explicit
    if named := os.environ.get("OASIS_CONFIG"):
        return Path(named)
    beside_data = (data_dir or default_data_dir()) / "config.yaml"
    return beside_data if beside_data.is_file() else None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {exc.problem}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def _place(loc: tuple[int | str, ...], raw: Any) -> str:
    """ "model 'chat': `options`" (or "models[2]: …" without an id) from a pydantic error location and the file."""
    if len(loc) >= 2 and loc[0] == "models" and isinstance(loc[1], int):
        listed = raw.get("models") if isinstance(raw, dict) else None
        entry = listed[loc[1]] if isinstance(listed, list) and loc[1] < len(listed) else None
        model_id = entry.get("id") if isinstance(entry, dict) else None
        where = f"model {model_id!r}" if model_id else f"models[{loc[1]}]"
        rest = ".".join(str(part) for part in loc[2:])
        return f"{where}: `{rest}`" if rest else where
    return "`" + ".".join(str(part) for part in loc) + "`"


def _plain(exc: ValidationError, raw: Any) -> str:
    problems = []
    for error in exc.errors():
        place = _place(tuple(error["loc"]), raw)
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown key {place}")
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            # A check across the whole file (an alias used twice) has no place of its own.
            problems.append(f"{place}: {message}" if error["loc"] else message)
    return "; ".join(problems)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from the optional YAML config file, the environment, then explicit overrides. A mistake
    in any of them is a ConfigError of one line."""
    raw: Any = None
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        raw = _read_yaml(config_file)
        if raw is not None and not isinstance(raw, dict):
            raise ConfigError(f"{config_file}: expected a mapping of settings (server:, models:, …) at the top")

    class _WithConfigFile(Settings):
        model_config = SettingsConfigDict(yaml_file=config_file)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                sources.append(YamlConfigSettingsSource(settings_cls))
            return tuple(sources)

    source = f"{config_file}: " if config_file is not None else ""
    try:
        return _WithConfigFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(f"{source}{_plain(exc, raw)}") from None
    except SettingsError as exc:  # an environment variable that does not parse (OASIS_MODELS='[bad')
        raise ConfigError(f"{source}{exc}") from None
