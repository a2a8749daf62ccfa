"""Numbers held to a JSON Schema's bounds in the grammar (engines/llamacpp/number_grammar.py): every numeral the
rule admits lies within the bounds, and every one within them (as a model would write it) is admitted. The rules
use only literals, character classes, groups, alternatives and bounded repetition, so they read as regular
expressions; llama.cpp's parsing of them is tested through the chat API (tests/api/test_chat.py)."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from oasis.engines.llamacpp.number_grammar import EmptyRange, bounded_number_rule


def _regex(rule: str) -> re.Pattern[str]:
    pattern = re.sub(r'"([^"]*)"', lambda literal: re.escape(literal.group(1)), rule).replace(" ", "")
    return re.compile(pattern)


def _admitted(schema: dict[str, object], numeral: str) -> bool:
    return _regex(bounded_number_rule(schema)).fullmatch(numeral) is not None


def _within(value: Decimal, schema: dict[str, object]) -> bool:
    checks = [
        ("minimum", lambda bound: value >= bound),
        ("maximum", lambda bound: value <= bound),
        ("exclusiveMinimum", lambda bound: value > bound),
        ("exclusiveMaximum", lambda bound: value < bound),
    ]
    return all(check(Decimal(str(schema[key]))) for key, check in checks if key in schema)


INTEGER_BOUNDS = [
    {"minimum": 1, "maximum": 5},
    {"minimum": 0, "maximum": 100},
    {"minimum": 7, "maximum": 1234},
    {"minimum": -25, "maximum": 13},
    {"minimum": -300, "maximum": -17},
    {"minimum": 42},
    {"minimum": -42},
    {"maximum": 99},
    {"maximum": -5},
    {"exclusiveMinimum": 0},
    {"exclusiveMinimum": 0, "exclusiveMaximum": 10},
    {"minimum": 1.5, "maximum": 9.5},
    {"minimum": 3, "exclusiveMinimum": 5, "maximum": 1000, "exclusiveMaximum": 999},
]


@pytest.mark.parametrize("bounds", INTEGER_BOUNDS, ids=str)
def test_integers_admitted_are_exactly_those_within_the_bounds(bounds: dict[str, object]) -> None:
    schema = {"type": "integer", **bounds}
    pattern = _regex(bounded_number_rule(schema))
    for value in range(-2000, 2001):
        assert (pattern.fullmatch(str(value)) is not None) == _within(Decimal(value), schema), (value, schema)
    assert pattern.fullmatch("007") is None and pattern.fullmatch("1.0") is None and pattern.fullmatch("1e2") is None
    if "maximum" not in bounds and "exclusiveMaximum" not in bounds:
        assert pattern.fullmatch("9" * 16) is not None  # no upper bound: as long as the plain integer rule allows


NUMBER_BOUNDS = [
    {"minimum": 0, "maximum": 1},
    {"minimum": 1, "maximum": 5},
    {"minimum": -1, "maximum": 1},
    {"minimum": -10, "maximum": -2},
    {"exclusiveMinimum": 0},
    {"exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"minimum": 0},
    {"maximum": 0},
    {"exclusiveMaximum": 0},
    {"minimum": -3, "exclusiveMaximum": 20},
    {"exclusiveMinimum": -1, "maximum": 0},
]
NUMERALS = sorted(
    {
        f"{sign}{whole}{fraction}"
        for sign in ("", "-")
        for whole in range(0, 25)
        for fraction in ("", ".0", ".00", ".5", ".25", ".999", ".001", ".10")
    }
)


@pytest.mark.parametrize("bounds", NUMBER_BOUNDS, ids=str)
def test_numbers_admitted_are_exactly_those_within_whole_bounds(bounds: dict[str, object]) -> None:
    schema = {"type": "number", **bounds}
    pattern = _regex(bounded_number_rule(schema))
    for numeral in NUMERALS:
        within = _within(Decimal(numeral), schema)
        if numeral.startswith("-") and Decimal(numeral) == 0:
            continue  # "-0" is 0: admitted or not, never outside the bounds
        assert (pattern.fullmatch(numeral) is not None) == within, (numeral, schema)
    assert pattern.fullmatch("1e1") is None and pattern.fullmatch("01") is None


def test_a_fractional_bound_is_widened_to_the_whole_numbers_around_it() -> None:
    schema = {"type": "number", "minimum": 0.5, "maximum": 2.5}
    assert _admitted(schema, "0.5") and _admitted(schema, "2.5") and _admitted(schema, "1.75")
    assert not _admitted(schema, "3.5") and not _admitted(schema, "-0.5")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 5, "maximum": 1},
        {"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2},
        {"type": "integer", "minimum": 1.2, "maximum": 1.8},
        {"type": "number", "minimum": 2, "maximum": 1},
        {"type": "number", "exclusiveMinimum": 1, "maximum": 1},
        {"type": "number", "minimum": 0.7, "maximum": 0.3},  # refused before the fractional bounds are widened
        {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 0.5},
    ],
    ids=str,
)
def test_bounds_that_leave_no_value_are_refused(schema: dict[str, object]) -> None:
    with pytest.raises(EmptyRange):
        bounded_number_rule(schema)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "number", "minimum": -1e308, "maximum": 1e308},
        {"type": "integer", "minimum": 1e17},
        {"type": "integer", "maximum": -1e17},
        {"type": "number", "minimum": 1.6e18},
    ],
    ids=str,
)
def test_a_bound_past_sixteen_digits_is_left_out_not_written_out(schema: dict[str, object]) -> None:
    """A rule a digit of the bound would make a grammar hundreds of times the schema's size (1e308 has 309
    digits), and one past the numerals' 16 digits would admit no number at all: such a bound is left out."""
    rule = bounded_number_rule(schema)
    assert len(rule) < 1000 and "()" not in rule
    pattern = _regex(rule)
    assert pattern.fullmatch("123") is not None and pattern.fullmatch("") is None
