"""GBNF of a function's arguments in Gemma 4's call syntax, from their JSON Schema.

Gemma 4 writes a call as `<|tool_call>call:name{key:value,…}<tool_call|>`: keys bare, a string between `<|"|>`
quotes as it is written, numbers and literals as JSON's, no blank space. llama.cpp's JSON Schema converter writes
JSON, so the rules are written here: each property in the order it is declared (a required one always, another
perhaps), strings (one of an `enum`'s where there is one), integers, numbers, literals, arrays of an `items` schema
and objects of named properties as the schema says; whatever the schema says otherwise (`$ref`, `allOf`, a string's
`pattern` or length) is held to Gemma's syntax alone, which the reader reads (tool_formats `_read_gemma`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from oasis.engines.llamacpp.gbnf import FINITE_NUMBER, INTEGER, in_order, literal, text_without
from oasis.engines.text import GEMMA_CALL_END, GEMMA_QUOTE, GEMMA_TURN_END, UnusableSchema

# Rule names of their own beside the call grammar's
_ANY = "oasis-gemma-any"
_STRING = "oasis-gemma-string"
_TEXT = "oasis-gemma-text"
_INTEGER = "oasis-gemma-integer"
_NUMBER = "oasis-gemma-number"
_KEY = "oasis-gemma-key"
_ARGUMENTS = "oasis-gemma-arguments-{}"
# A key the reader reads back as written: up to its colon, nothing it would strip or take for markup
_PLAIN_KEY = re.compile(r"[^\s:,{}\[\]<>]+")
# What the reader would end a string at (its closing quote; the call's end, the turn's): a string holds none of them
_ENDS_A_STRING = (GEMMA_QUOTE, GEMMA_CALL_END, GEMMA_TURN_END)
_DEPTH = 16  # schemas nested deeper are held to the syntax alone


def gemma_rules(parameters: Sequence[Any]) -> tuple[list[str], list[str]]:
    """The rules for each function's `parameters` (a JSON Schema), and the name of each one's arguments rule (an
    object, as the reader reads them). Raises UnusableSchema for a property's name that the syntax cannot hold."""
    writer = _Writer()
    names = []
    for index, schema in enumerate(parameters):
        name = _ARGUMENTS.format(index)
        writer.rules[name] = writer.object_value(schema if isinstance(schema, Mapping) else {}, name, 0)
        names.append(name)
    return [f"{name} ::= {body}" for name, body in writer.rules.items()], names


def gemma_written(value: Any) -> str:
    """A JSON value as Gemma 4 writes it."""
    if isinstance(value, str):
        return GEMMA_QUOTE + value + GEMMA_QUOTE
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{key}:{gemma_written(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(map(gemma_written, value)) + "]"
    return json.dumps(value)


def _read_back(value: Any) -> bool:
    """Whether the reader reads `value`, as Gemma writes it, back as it is (its strings hold no markup that ends
    them, its keys are plain, its numbers finite)."""
    if isinstance(value, str):
        return not any(mark in value for mark in _ENDS_A_STRING)
    if isinstance(value, Mapping):
        return all(isinstance(key, str) and _PLAIN_KEY.fullmatch(key) for key in value) and all(
            map(_read_back, value.values())
        )
    if isinstance(value, list):
        return all(map(_read_back, value))
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int))


class _Writer:
    def __init__(self) -> None:
        quoted = literal(GEMMA_QUOTE)
        self.rules: dict[str, str] = {
            _ANY: (
                f'{_STRING} | {_NUMBER} | "true" | "false" | "null"'
                f' | "{{" ( {_KEY} ":" {_ANY} ( "," {_KEY} ":" {_ANY} )* )? "}}"'
                f' | "[" ( {_ANY} ( "," {_ANY} )* )? "]"'
            ),
            # (what `_PLAIN_KEY` allows, but blank space beyond ASCII's, which no model writes in a key)
            _KEY: "[^\\x00-\\x20\\x7F:,{}[\\]<>]{1,64}",
            _STRING: f"{quoted} {_TEXT} {quoted}",
            _TEXT: text_without(_ENDS_A_STRING),
            _INTEGER: INTEGER,
            _NUMBER: FINITE_NUMBER,
        }

    def value(self, schema: Any, name: str, depth: int) -> str:
        """A GBNF expression of a value `schema` allows (`name`: a rule name of its own, and the base of those of
        the rules it needs)."""
        if not isinstance(schema, Mapping) or depth > _DEPTH:
            return _ANY
        if "const" in schema:
            return self._choices([schema["const"]])
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._choices(schema["enum"])
        alternatives = schema.get("anyOf", schema.get("oneOf"))
        if isinstance(alternatives, list) and alternatives:
            written = [self.value(one, f"{name}-{index}", depth + 1) for index, one in enumerate(alternatives)]
            return self._either(written)
        kind = schema.get("type")
        if isinstance(kind, list) and kind:
            written = [
                self.value({**schema, "type": one}, f"{name}-t{index}", depth + 1) for index, one in enumerate(kind)
            ]
            return self._either(written)
        if "$ref" in schema or "allOf" in schema or "not" in schema:
            return _ANY
        if kind == "string":
            return _STRING
        if kind == "integer":
            return _INTEGER
        if kind == "number":
            return _NUMBER
        if kind == "boolean":
            return '( "true" | "false" )'
        if kind == "null":
            return '"null"'
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "object" or "properties" in schema:
            self.rules[name] = self.object_value(schema, name, depth)
            return name
        return _ANY

    def object_value(self, schema: Mapping[str, Any], name: str, depth: int) -> str:
        """An object: its declared properties in order (a required one always, another perhaps), or any keys."""
        properties = schema.get("properties")
        if not isinstance(properties, Mapping) or not properties:
            if schema.get("additionalProperties") is False:
                return '"{" "}"'
            items = self.value(schema.get("additionalProperties"), f"{name}-value", depth + 1)
            return f'"{{" ( {_KEY} ":" {items} ( "," {_KEY} ":" {items} )* )? "}}"'
        required = schema.get("required") or ()
        members = []
        for index, (key, member) in enumerate(properties.items()):
            if not isinstance(key, str) or not _PLAIN_KEY.fullmatch(key) or key.startswith(GEMMA_QUOTE):
                raise UnusableSchema(f"a key that Gemma 4's calls cannot hold: {key!r}")
            value = self.value(member, f"{name}-{index}", depth + 1)
            members.append((f"{literal(key + ':')} {value}", key in required))
        first = in_order(members, name, '","', self.rules)
        return f'"{{" {first} "}}"'

    def _array(self, schema: Mapping[str, Any], name: str, depth: int) -> str:
        item = self.value(schema.get("items"), f"{name}-item", depth + 1)
        if isinstance(schema.get("minItems"), int) and schema["minItems"] > 0:
            return f'"[" {item} ( "," {item} )* "]"'
        return f'"[" ( {item} ( "," {item} )* )? "]"'

    def _choices(self, values: list[Any]) -> str:
        """One of `values`, as Gemma writes them (one that the reader would not read back as it is: any value)."""
        return self._either([literal(gemma_written(value)) if _read_back(value) else _ANY for value in values])

    @staticmethod
    def _either(alternatives: list[str]) -> str:
        unique = list(dict.fromkeys(alternatives))
        return unique[0] if len(unique) == 1 else "( " + " | ".join(unique) + " )"
