"""Strings held to a JSON Schema `pattern` in the grammar (engines/llamacpp/pattern_grammar.py): the rule admits
exactly the JSON strings whose value the pattern matches, as JSON Schema reads it (anywhere, unless anchored).
The rules use only literals, character classes, groups, alternatives and repetition, with escapes that Python's
`re` reads alike, so they read as regular expressions; llama.cpp's parsing of them is tested through the chat API
(tests/api/test_chat_tools.py)."""

from __future__ import annotations

import json
import random
import re

import pytest

from oasis.engines.llamacpp.pattern_grammar import UnusablePattern, pattern_string_rule


def _regex(rule: str) -> re.Pattern[str]:
    # a literal's content and a class are already regex syntax; the spaces between items are GBNF's
    pattern = re.sub(r'"((?:[^"\\]|\\.)*)"', lambda literal: f"(?:{literal.group(1)})", rule).replace(" ", "")
    return re.compile(pattern)


PATTERNS = [
    r"^\d{4}-\d{2}-\d{2}$",
    r"^[A-Z][a-z]+( [A-Z][a-z]+)*$",
    r"^(cat|dog|bird)s?$",
    r"ab+c",
    r"^\w+@\w+\.(com|org)$",
    r'^[^"\\]*"$',
    r"^a.c$",
    r"^\s*\S+\s*$",
    r"^x{2,3}y?$",
    r"^[a-c\n\"]+$",
    r"^é+ü$",
    r"^(?:ab|cd)*?e$",
    r"(?s)^a.c$",
    r"^a$|^b$",
    r"^(a)$|^bc$",
    r"a$|^b",
    r"^(?:^\d+$)$",
    r"^",
    r"$",
    r"(a|)b",
    r"",
    r"(?i)^abc[x-z]*$",
    r"^(?i:ab)c$",
    r"(?i)^[^a]b$",
    r"(?i)^é+$",
    r"^a(?s:.)(?i:.)$",
    r"(?i)^[^k]s$",  # the Kelvin sign is a k and the long s an s, to Python ignoring case
    r"(?ai)^é[a-k]$",  # ASCII letters alone fold under (?a)
]
ALPHABET = 'abcdkxyzABCKXZ0123456789 -.@"\\\n\téüÉ_\u212a\u017fs'
SAMPLES = [
    "2025-05-01",
    "2025-5-01",
    "Hello World",
    "hello",
    "cats",
    "dog",
    "xabbbcx",
    "ac",
    "me@home.org",
    'say"',
    'a"b"',
    "abc",
    "a\nc",
    "  word  ",
    "two words",
    "xxy",
    "xxxxy",
    'a\n"b',
    "ééü",
    "ababcde",
    "",
    "\u212as",
    "K\u017f",
    "xS",
    "Éa",
    "éK",
]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_rule_admits_exactly_the_strings_the_pattern_matches(pattern: str) -> None:
    rule = _regex(pattern_string_rule(pattern))
    generator = random.Random(pattern)
    randoms = ["".join(generator.choice(ALPHABET) for _ in range(generator.randint(0, 8))) for _ in range(400)]
    for value in SAMPLES + randoms:
        written = json.dumps(value, ensure_ascii=False)  # as JSON writes the string the model must produce
        if value.endswith("\n") and "$" in pattern:
            continue  # Python's `$` also matches before a last newline; JSON Schema's (ECMAScript's) does not
        expected = re.search(pattern, value) is not None
        assert (rule.fullmatch(written) is not None) == expected, (pattern, value, written)


def test_a_quote_backslash_or_control_character_is_admitted_only_as_its_json_escape() -> None:
    rule = _regex(pattern_string_rule(r'^["\\\n]$'))
    assert rule.fullmatch('"\\""') and rule.fullmatch('"\\\\"') and rule.fullmatch('"\\n"')
    assert not rule.fullmatch('"""') and not rule.fullmatch('"\\"') and not rule.fullmatch('"\n"')


@pytest.mark.parametrize(
    "pattern", [r"(?=a)b", r"(a)\1", r"\bword", r"(?m)^a$", r"a{1000}", r"[", r"(?<!x)y", r"a^b", r"(a|)*", r"(b?)+c"]
)
def test_what_a_grammar_cannot_express_is_refused(pattern: str) -> None:
    with pytest.raises(UnusablePattern):
        pattern_string_rule(pattern)
