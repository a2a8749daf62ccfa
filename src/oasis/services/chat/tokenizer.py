"""The vLLM-style tokenizer extensions (`/tokenizer_info`, `/tokenize`, `/detokenize`) that lm-evaluation-harness's
remote tokenizer backend uses, so its loglikelihood tasks run without downloading a tokenizer."""

from __future__ import annotations

from typing import Any

from oasis.engines.registry import EngineRegistry
from oasis.engines.text import TextEngine
from oasis.errors import invalid_request, not_found
from oasis.services.chat.text_models import text_engine


class TokenizerService:
    def __init__(self, registry: EngineRegistry) -> None:
        self._registry = registry

    def first_model(self) -> str:
        """The first configured text model: the one that answers where no model is named (as vLLM, which serves
        one model)."""
        for spec in self._registry.specs:
            engine = self._registry.engine(spec.id)
            if engine is not None and hasattr(engine, "tokenize"):
                return spec.id
        raise not_found("No text model is being served.", param="model", code="model_not_found")

    def _engine(self, model: str | None) -> tuple[str, TextEngine]:
        name = self.first_model() if model is None else model
        return name, text_engine(self._registry, name, purpose="tokenization")

    def info(self, model: str | None) -> dict[str, Any]:
        name, engine = self._engine(model)
        return {
            "model": name,
            "eos_token": engine.special_tokens.get("eos_token"),
            "bos_token": engine.special_tokens.get("bos_token"),
            "pad_token": None,
            "chat_template": engine.chat_template,
            "model_max_length": engine.context_length,
        }

    def tokenize(self, model: str | None, prompt: str, add_special_tokens: bool) -> dict[str, Any]:
        _, engine = self._engine(model)
        # As vLLM's: the text of a special token is that token whatever `add_special_tokens` (which only adds
        # BOS/EOS); lm-eval finds the BOS and EOS ids by tokenizing their text with it false.
        tokens = engine.tokenize(prompt, add_special=add_special_tokens, parse_special=True)
        return {"tokens": tokens, "count": len(tokens), "max_model_len": engine.context_length}

    def detokenize(self, model: str | None, tokens: list[int]) -> dict[str, Any]:
        _, engine = self._engine(model)
        bad = [token for token in tokens if not engine.is_valid_token(token)]
        if bad:
            raise invalid_request(f"Invalid token ids: {bad[:5]}.", param="tokens")
        return {"prompt": engine.detokenize(tokens)}
