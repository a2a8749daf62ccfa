"""The one place that imports llama_cpp: loads the library once, quietly, and converts JSON Schemas to GBNF."""

from __future__ import annotations

import ctypes
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from functools import cache
from typing import Any

from llama_cpp import llama_cpp as _lib
from llama_cpp.llama_grammar import INVALID_RULE_CHARS_RE, PRIMITIVE_RULES, RESERVED_NAMES, SchemaConverter

from oasis.engines.lark_grammar import LARK_SCHEMA_KEY, read_lark
from oasis.engines.llamacpp.lark_gbnf import lark_string_rules
from oasis.engines.llamacpp.number_grammar import BOUND_KEYS, bounded_number_rule
from oasis.engines.llamacpp.pattern_grammar import pattern_string_rule

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


# Parsed grammars (engine.py) are remembered only up to this length; converted ones are bounded by GRAMMAR_CACHE.
CACHED_SCHEMA_CHARS = 64 * 1024


class _Converter(SchemaConverter):
    """llama-cpp-python's converter, with integers and numbers held to their schema's bounds, strings to their
    patterns as JSON Schema reads them (pattern_grammar.py), and a custom tool's input to its lark grammar."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._ref_rules: dict[str, str] = {}  # each `$ref` (resolved) -> the rule its schema became

    def visit(self, schema: Any, name: str) -> Any:
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
        # A schema of annotations alone (pydantic's `Any`: `{"title": "Any"}`), or an empty one inside another,
        # allows any value, as JSON Schema reads it (the converter asserted, or allowed objects only); the empty
        # schema at the root stays "any object": JSON mode's
        if isinstance(schema, dict) and set(schema) <= _ANNOTATIONS and (schema or name):
            return self._add_rule(rule_name, self._add_primitive("value", PRIMITIVE_RULES["value"]))
        rule = self._own_rule(schema)
        if rule is None:
            return super().visit(schema, name)
        return self._add_rule(rule_name, f"{rule} space")

    def _resolve_ref(self, ref: str) -> str:
        # As llama-cpp-python's, with a rule name of each reference's own, taken before its schema is read: the
        # converter named it after the pointer's last part, so that `.../a/items` and `.../b/items` were one rule,
        # and a recursive reference (a model that holds itself) was written with the raw name (`_Person`)
        known = self._ref_rules.get(ref)
        if known is not None:
            return known
        base = INVALID_RULE_CHARS_RE.sub("-", ref.split("/")[-1]) or "ref"
        name, number = base, 0
        while name in RESERVED_NAMES or name in self._rules or name in self._ref_rules.values():
            number += 1
            name = f"{base}{number}"
        self._ref_rules[ref] = name
        written = str(self.visit(self._refs[ref], name))
        if written != name:  # a primitive (`integer`) is its own rule: the name taken becomes another word for it
            self._add_rule(name, written)
        return written

    def _own_rule(self, schema: Any) -> str | None:
        """The rule this converter writes itself for a plain (uncombined) bounded number, patterned string or
        string in a lark grammar."""
        if not isinstance(schema, dict) or any(key in schema for key in _COMBINING_KEYS):
            return None
        if schema.get("type") in ("integer", "number") and any(key in schema for key in BOUND_KEYS):
            return f"({bounded_number_rule(schema)})"
        if schema.get("type") in (None, "string") and isinstance(schema.get(LARK_SCHEMA_KEY), str):
            definition = schema[LARK_SCHEMA_KEY]
            rules, string = lark_string_rules(read_lark(definition), definition)
            for rule_name, body in rules.items():
                self._add_rule(rule_name, body)
            return string
        if schema.get("type") in (None, "string") and isinstance(schema.get("pattern"), str):
            return pattern_string_rule(schema["pattern"])
        return None


def _definitions_read(node: Any) -> Any:
    """The schema with each `$ref` that has definitions beside it (a recursive pydantic model's root) made the one
    alternative of an `anyOf`: llama-cpp-python resolves a node's `$ref` and reads nothing else of it, so the
    definitions' own `$ref`s were never resolved."""
    if isinstance(node, list):
        return [_definitions_read(item) for item in node]
    if not isinstance(node, dict):
        return node
    read = {key: _definitions_read(value) for key, value in node.items()}
    combined = "anyOf" in read or "oneOf" in read
    if "$ref" in read and not combined and any(key in read for key in ("$defs", "definitions")):
        read["anyOf"] = [{"$ref": read.pop("$ref")}]
    return read


# Keys that say something of a schema without constraining its values
_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "$comment", "deprecated", "readOnly", "writeOnly", "$schema"}
    | {"$id", "$defs", "definitions"}
)
# Keys that make a schema more than its own type: llama-cpp-python's converter handles those.
_COMBINING_KEYS = ("$ref", "anyOf", "oneOf", "allOf", "const", "enum")


def _convert(schema_json: str, parts_json: str) -> str:
    # as llama_cpp.llama_grammar.json_schema_to_gbnf, with the converter above
    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    resolved = converter.resolve_refs(_definitions_read(json.loads(schema_json)), "stdin")
    converter.visit(resolved, "")
    for name, pointer in json.loads(parts_json).items():
        written = str(converter.visit(_pointed(resolved, pointer), name))
        if written != name:  # a primitive (`integer`) is its own rule: the name asked for becomes another word for it
            converter._add_rule(name, written)
    return str(converter.format_grammar()).replace(_ANY_STRING_CHAR, _JSON_STRING_CHAR)


def _pointed(document: Any, pointer: str) -> Any:
    """The node a JSON Pointer (RFC 6901) names."""
    node = document
    for part in pointer.split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


class GrammarCache:
    """Schema (with its parts named) -> grammar, least recently used first out, bounded by the characters held
    (schemas and grammars together): keyed by whole schemas, each up to a request body's size, a cache bounded by
    count could hold gigabytes; skipping large ones would convert them again for every sequence, on the scheduler
    thread too. Used from the event loop and the scheduler thread."""

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._held: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.conversions = 0

    def __call__(self, schema_json: str, parts_json: str = "{}") -> str:
        key = (schema_json, parts_json)
        with self._lock:
            found = self._held.get(key)
            if found is not None:
                self._held.move_to_end(key)
                return found
        grammar = _convert(schema_json, parts_json)
        size = len(schema_json) + len(parts_json) + len(grammar)
        with self._lock:
            self.conversions += 1
            if size <= self.max_chars and key not in self._held:
                self._held[key] = grammar
                self._chars += size
                while self._chars > self.max_chars:
                    (old_schema, old_parts), old_grammar = self._held.popitem(last=False)
                    self._chars -= len(old_schema) + len(old_parts) + len(old_grammar)
        return grammar


GRAMMAR_CACHE = GrammarCache(max_chars=16 << 20)


def json_grammar(schema: Mapping[str, object], parts: Mapping[str, str] | None = None) -> str:
    """GBNF that accepts the JSON documents `schema` accepts (cached per schema); length and count bounds over
    MAX_GRAMMAR_REPETITION are not enforced. `parts`: rule names for values of the schema's own parts, each named
    by its JSON Pointer (a tool call's parameters, written one by one)."""
    # key order matters: properties are generated in order
    return GRAMMAR_CACHE(json.dumps(_without_huge_bounds(dict(schema))), json.dumps(dict(parts or {})))


@cache
def uses_amx() -> bool:
    """Whether this llama.cpp build runs its AMX kernels on this CPU. Their repacked weights crash batched
    decoding (ggml-org/llama.cpp#20824: a segfault in ggml_backend_amx_mul_mat on Sapphire Rapids), so the
    engine keeps weights unpacked there."""
    return "AMX_INT8 = 1" in lib().llama_print_system_info().decode(errors="replace")
