"""The one place that imports llama_cpp: loads the library once, quietly, and converts JSON Schemas to GBNF."""

from __future__ import annotations

import ctypes
import json
import logging
from collections.abc import Mapping
from functools import cache, lru_cache
from typing import Any

from llama_cpp import llama_cpp as _lib
from llama_cpp.llama_grammar import json_schema_to_gbnf

llama_token = _lib.llama_token
llama_logit_bias = _lib.llama_logit_bias
llama_token_data = _lib.llama_token_data
llama_token_data_array = _lib.llama_token_data_array
DEFAULT_SEED = _lib.LLAMA_DEFAULT_SEED


_log = logging.getLogger("oasis.engines.llamacpp.native")
# ggml_log_level: 1 debug, 2 info, 3 warn, 4 error, 5 "continued"; keep warnings and errors.
_LEVELS = {3: logging.WARNING, 4: logging.ERROR}


@_lib.llama_log_callback
def _forward_log(level: int, text: bytes, _user_data: Any) -> None:
    # llama.cpp prints every tensor it loads to stderr unless given a callback.
    if level in _LEVELS:
        _log.log(_LEVELS[level], "%s", text.decode("utf-8", errors="replace").rstrip())


@cache
def lib() -> Any:
    _lib.llama_backend_init()
    _lib.llama_log_set(_forward_log, ctypes.c_void_p(0))  # after init, which installs its own
    return _lib


@cache
def logits_address() -> Any:
    """`llama_get_logits_ith(context, row)` answering the address as an int (None for no logits): llama-cpp-python's
    binding answers a float pointer, which then takes a ctypes.cast to read; right after a decode, with cold
    caches, the two took 25-30 us a token. A function object of its own, so the binding's stays as it is."""
    function = _lib._lib["llama_get_logits_ith"]
    function.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    function.restype = ctypes.c_void_p
    return function


# llama.cpp writes a bounded repetition out as that many copies of its rule, and a bound in the thousands
# (`"maxLength": 2000`, common in tool schemas) makes a grammar that crashes its parser (llama.cpp#25746,
# #27859; upstream now caps them too). Bounds above this are left out of the grammar.
MAX_GRAMMAR_REPETITION = 256
_REPETITION_BOUNDS = ("minLength", "maxLength", "minItems", "maxItems")


def _without_huge_bounds(node: object) -> object:
    if isinstance(node, list):
        return [_without_huge_bounds(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: _without_huge_bounds(value)
        for key, value in node.items()
        if not (key in _REPETITION_BOUNDS and isinstance(value, (int, float)) and value > MAX_GRAMMAR_REPETITION)
    }


# llama-cpp-python's converter lets a JSON string hold raw control characters (a newline, a tab), which JSON forbids
# and strict parsers (Python's json.loads, JavaScript's JSON.parse) refuse: a forced tool call was then no call at
# all, a structured output unreadable. llama.cpp's own converter excludes them; so does this one's output here.
_ANY_STRING_CHAR = '[^"\\\\]'
_JSON_STRING_CHAR = '[^"\\\\\\x7F\\x00-\\x1F]'


# Schemas (and grammars) longer than this are converted each time rather than remembered: a cache keyed by whole
# schemas, each up to a request body's size, could otherwise hold gigabytes.
CACHED_SCHEMA_CHARS = 64 * 1024


def _convert(schema_json: str) -> str:
    return str(json_schema_to_gbnf(schema_json)).replace(_ANY_STRING_CHAR, _JSON_STRING_CHAR)


_grammar_for = lru_cache(maxsize=64)(_convert)


def json_grammar(schema: Mapping[str, object]) -> str:
    """GBNF that accepts the JSON documents `schema` accepts (cached per schema, short ones); length and count
    bounds over MAX_GRAMMAR_REPETITION are not enforced."""
    # key order matters: properties are generated in order
    schema_json = json.dumps(_without_huge_bounds(dict(schema)))
    return _grammar_for(schema_json) if len(schema_json) <= CACHED_SCHEMA_CHARS else _convert(schema_json)


@cache
def uses_amx() -> bool:
    """Whether this llama.cpp build runs its AMX kernels on this CPU. Their repacked weights crash batched
    decoding (ggml-org/llama.cpp#20824: a segfault in ggml_backend_amx_mul_mat on Sapphire Rapids), so the
    engine keeps weights unpacked there."""
    return "AMX_INT8 = 1" in lib().llama_print_system_info().decode(errors="replace")
