"""GBNF of pythonic calls (LFM2's and LFM2.5's, Llama 4's): `[name(key=value, …), …]` in the family's tags.

Each keyword's value is a JSON value of its property's schema, whose rules llama.cpp's converter writes
(`python_parts` names them), with Python's literals allowed for JSON's (`True`, `False`, `None`), as the reader
(Python's `ast`, tool_formats `_calls_from_python`) reads either. Properties come in the order they are declared, a
required one always, another perhaps; a function whose parameters are not named takes any keywords.
"""

from __future__ import annotations

import keyword
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from oasis.engines.llamacpp.gbnf import FINITE_NUMBER, in_order, literal
from oasis.engines.text import UnusableSchema

_VALUE = "oasis-py-value-{}-{}"  # the j-th property of the i-th function, a rule of the schema's converter
_ARGUMENTS = "oasis-py-arguments-{}"
_CALL = "oasis-py-call"
_ANY = "oasis-py-any"
_STRING = "oasis-py-string"
_KEY = "oasis-py-key"
CALLS = "oasis-py-calls"
# Between arguments and between calls, as LFM2 writes them (Python reads any blank space there)
_SEPARATOR = '"," " "?'
# JSON's literals in the converter's rules (not inside a string's literal, whose quotes are escaped)
_JSON_LITERAL = re.compile(r'(?<!\\)"(true|false|null)"')
_PYTHON_LITERALS = {"true": "True", "false": "False", "null": "None"}
# What the converter's rules write that Python reads otherwise than JSON, and what is written instead: `\/` (kept
# as written), a surrogate's `\u` escape (a half of a pair stays a half, which no reply can be sent with), and an
# exponent of more than two digits (`1e999`, no finite number)
_CODE_UNIT = '"u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F]'
_NOT_A_SURROGATE = '"u" ( [0-9a-cA-CefEF] [0-9a-fA-F] | [dD] [0-7] ) [0-9a-fA-F] [0-9a-fA-F]'
_REWRITTEN = (
    ('["\\\\/bfnrt]', '["\\\\bfnrt]'),
    (_CODE_UNIT, _NOT_A_SURROGATE),
    ("[eE] [-+]? integral-part", "[eE] [-+]? [0-9] [0-9]?"),
)


def python_parts(parameters: Sequence[Any]) -> dict[str, str]:
    """The rule of each function's each declared property, and the JSON Pointer of its schema in the call's schema
    (the converter writes the rules)."""
    parts = {}
    for index, schema in enumerate(parameters):
        for number, key in enumerate(_declared(schema)):
            pointer = key.replace("~", "~0").replace("/", "~1")
            parts[_VALUE.format(index, number)] = f"/anyOf/{index}/properties/arguments/properties/{pointer}"
    return parts


def python_rules(names: Sequence[str], parameters: Sequence[Any], repeats: bool) -> list[str]:
    """The calls' rules, rooted at CALLS: a list of one call, or of several (`repeats`). Raises UnusableSchema
    for a function's or a property's name that Python would not read as one."""
    rules: dict[str, str] = {
        _ANY: (
            f"{_STRING} | {FINITE_NUMBER}"
            ' | "true" | "false" | "null" | "True" | "False" | "None"'
            f' | "[" ( {_ANY} ( {_SEPARATOR} {_ANY} )* )? "]"'
            f' | "{{" ( {_STRING} ":" " "? {_ANY} ( {_SEPARATOR} {_STRING} ":" " "? {_ANY} )* )? "}}"'
        ),
        # (JSON's escapes that Python reads alike: not `\/`, which Python keeps as written, nor a surrogate's)
        _STRING: f'"\\"" ( [^"\\\\\\x7F\\x00-\\x1F] | "\\\\" ( ["\\\\bfnrt] | {_NOT_A_SURROGATE} ) )* "\\""',
    }
    calls = []
    for index, (name, schema) in enumerate(zip(names, parameters, strict=True)):
        if not _python_name(name):
            raise UnusableSchema(f"a function's name that a pythonic call cannot hold: {name!r}")
        rule = _ARGUMENTS.format(index)
        declared = _declared(schema)
        if declared:
            required = schema.get("required") or ()
            members = []
            for number, key in enumerate(declared):
                if not _python_name(key):
                    raise UnusableSchema(f"a parameter's name that a pythonic call cannot hold: {key!r}")
                members.append((f"{literal(key + '=')} {_VALUE.format(index, number)}", key in required))
            first = in_order(members, rule, _SEPARATOR, rules)
            rules[rule] = f'"(" {first} ")"'
        elif isinstance(schema, Mapping) and schema.get("additionalProperties") is False:
            rules[rule] = '"(" ")"'
        else:
            rules.update(_identifier_except(keyword.kwlist, _KEY))
            keyed = f'{_KEY} "=" {_ANY}'
            rules[rule] = f'"(" ( {keyed} ( {_SEPARATOR} {keyed} )* )? ")"'
        calls.append(f"{literal(name)} {rule}")
    rules[_CALL] = " | ".join(calls)
    rules[CALLS] = f'"[" {_CALL} ( {_SEPARATOR} {_CALL} )* "]"' if repeats else f'"[" {_CALL} "]"'
    return [f"{name} ::= {body}" for name, body in rules.items()]


def python_literals(schema_rules: str) -> str:
    """The converter's rules with Python's literals allowed wherever JSON's are, and without what Python would read
    otherwise than JSON does."""
    for written, instead in _REWRITTEN:
        schema_rules = schema_rules.replace(written, instead)
    return _JSON_LITERAL.sub(lambda match: f'( "{match[1]}" | "{_PYTHON_LITERALS[match[1]]}" )', schema_rules)


def _identifier_except(words: Sequence[str], name: str) -> dict[str, str]:
    """Rules of an ASCII identifier that is none of `words` (Python's keywords, which it reads as no name): a trie
    of the words, each node's rule a child, any other identifier character and then any identifier, or (where the
    node is no word) the end."""
    rest = "[A-Za-z0-9_]*"
    rules: dict[str, str] = {}

    def node(prefix: str, rule: str) -> None:
        children = sorted({word[len(prefix)] for word in words if word.startswith(prefix) and len(word) > len(prefix)})
        allowed = (string.ascii_letters + "_") if not prefix else (string.ascii_letters + string.digits + "_")
        alternatives = [f"[{''.join(char for char in allowed if char not in children)}] {rest}"]
        for index, char in enumerate(children):
            alternatives.append(f'"{char}" {rule}-{index}')
            node(prefix + char, f"{rule}-{index}")
        body = " | ".join(alternatives)
        rules[rule] = f"( {body} )?" if prefix and prefix not in words else body

    node("", name)
    return rules


def _declared(schema: Any) -> list[str]:
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    return [key for key in properties if isinstance(key, str)] if isinstance(properties, Mapping) else []


def _python_name(name: str) -> bool:
    """Whether Python reads `name` as one name (a keyword it reads otherwise)."""
    return name.isidentifier() and name.isascii() and not keyword.iskeyword(name)
