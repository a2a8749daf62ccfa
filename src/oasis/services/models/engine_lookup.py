"""Finding the loaded engine behind a model name, with the errors OpenAI gives for each way that fails."""

from __future__ import annotations

from typing import Any

from oasis.engines.base import Engine
from oasis.engines.registry import EngineRegistry
from oasis.engines.text import EngineBusy
from oasis.errors import OasisError, invalid_request, not_found
from oasis.metrics import THROTTLED, model_label

_implemented: dict[tuple[type, type], bool] = {}


def implements(engine: Engine, capability: type) -> bool:
    """isinstance() against a runtime-checkable protocol, remembered per engine class: the check walks every
    member of the protocol, and it sits on the path of every request."""
    key = (type(engine), capability)
    found = _implemented.get(key)
    if found is None:
        found = _implemented[key] = isinstance(engine, capability)
    return found


def unknown_in_body(model: str) -> OasisError:
    """The 400 OpenAI's Assistants answer for a `model` in an assistant or a run that is not served."""
    return invalid_request(f"The requested model '{model}' does not exist.", param="model", code="model_not_found")


def check_known(registry: EngineRegistry, model: str, *, in_body: bool = False) -> None:
    """404 for a model that is not configured (under any of its names); `in_body`: 400 `model_not_found`, as
    OpenAI's Assistants answer a bad `model` in an assistant or a run."""
    if registry.resolve(model) is None:
        if in_body:
            raise unknown_in_body(model)
        raise not_found(
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )


def check_not_failed(registry: EngineRegistry, model: str) -> None:
    """503 `model_failed`, with the reason, for a configured model that failed to load."""
    state = registry.state(model)
    if state is not None and state.status == "failed":
        raise OasisError(
            503, f"The model '{model}' failed to load: {state.error}", type="server_error", code="model_failed"
        )


def loaded_engine(registry: EngineRegistry, model: str) -> Engine:
    """404 for an unknown model, 503 while it is still loading or when it failed to load (with the reason)."""
    check_known(registry, model)
    engine = registry.engine(model)
    if engine is None:
        check_not_failed(registry, model)
        raise OasisError(
            503, f"The model '{model}' is still loading; retry shortly.", type="server_error", code="model_loading"
        )
    return engine


def engine_for(registry: EngineRegistry, model: str, capability: type, purpose: str) -> Any:
    """The engine, which must implement the runtime-checkable `capability` protocol, else a 400."""
    engine = loaded_engine(registry, model)
    if not implements(engine, capability):
        raise invalid_request(f"The model '{model}' does not do {purpose}.", param="model")
    return engine


def helper_engine(
    registry: EngineRegistry, model: str, capability: type, purpose: str, *, why: str, param: str, code: str
) -> Any:
    """The engine of a model a setting names to help with a request for another (`why`: "input_audio parts are
    heard by the transcription model 'whisper-1' (`chat.audio_transcription_model`)"): what `engine_for` refuses
    is the request's 400, naming `param`; a model still loading or that failed to load stays a 503 (not the
    request's fault)."""
    try:
        return engine_for(registry, model, capability, purpose)
    except OasisError as exc:
        if exc.status >= 500:
            raise
        raise invalid_request(f"{why}: {exc.message}", param=param, code=code) from None


def served_id(registry: EngineRegistry, model: str) -> str:
    """The configured id behind an id or alias (the name itself when it is not configured)."""
    spec = registry.resolve(model)
    return model if spec is None else spec.id


def queue_full(model_id: str, busy: EngineBusy) -> OasisError:
    """The 429 for a model whose queue is full (OpenAI's rate-limit shape, with Retry-After), counted in the
    metrics under the model's configured id."""
    THROTTLED.labels(model_label(model_id)).inc()
    return OasisError(
        429,
        f"The model '{model_id}' is serving as many requests as it can queue; retry shortly.",
        type="server_error",
        code="rate_limit_exceeded",
        headers={"retry-after": str(busy.retry_after)},
    )
