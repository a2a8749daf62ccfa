"""The one place that imports llama_cpp: loads the library once, quietly, and converts JSON Schemas to GBNF."""

from __future__ import annotations

import ctypes
import json
import logging
from collections.abc import Mapping
from functools import cache
from typing import Any

from llama_cpp import llama_cpp as _lib
from llama_cpp.llama_grammar import json_schema_to_gbnf

llama_token = _lib.llama_token
llama_logit_bias = _lib.llama_logit_bias
DEFAULT_SEED = _lib.LLAMA_DEFAULT_SEED


_log = logging.getLogger("oasis.engines.llamacpp.native")
# ggml levels: 1 info, 2 warn, 3 error; 4 debug and 5 "continued" lines are chatter.
_LEVELS = {2: logging.WARNING, 3: logging.ERROR}


@_lib.llama_log_callback
def _forward_log(level: int, text: bytes, _user_data: Any) -> None:
    # llama.cpp prints every tensor it loads to stderr unless given a callback; keep warnings and errors.
    if level in _LEVELS:
        _log.log(_LEVELS[level], "%s", text.decode("utf-8", errors="replace").rstrip())


@cache
def lib() -> Any:
    _lib.llama_log_set(_forward_log, ctypes.c_void_p(0))
    _lib.llama_backend_init()
    return _lib


@cache
def _grammar_for(schema_json: str) -> str:
    return str(json_schema_to_gbnf(schema_json))


def json_grammar(schema: Mapping[str, object]) -> str:
    """GBNF that accepts exactly the JSON documents `schema` accepts (cached per schema)."""
    return _grammar_for(json.dumps(schema, sort_keys=True))
