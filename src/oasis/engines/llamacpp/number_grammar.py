"""GBNF for JSON numbers held to a JSON Schema's bounds (`minimum`, `maximum`, `exclusiveMinimum`,
`exclusiveMaximum`), which llama-cpp-python's schema converter leaves out: `Field(ge=1, le=5)` on a structured
output or a tool's argument let the model write 15. OpenAI's structured outputs keep to these bounds.

Integers are held to their bounds exactly. Numbers are too when the bounds are whole (0 to 1, 1 to 5, above 0: what
schemas mostly ask); a fractional bound (`maximum: 0.5`) is widened to the whole numbers around it, so the grammar
admits a superset of the range. Bounded numbers are written without an exponent, as JSON allows. A bound of more
than MAX_DIGITS digits is left out (numerals have that many at most).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# As the converter's own integral-part rule: at most 16 digits.
MAX_DIGITS = 16
BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")

_FRACTION = f'"." [0-9]{{1,{MAX_DIGITS}}}'
# a fraction above zero: zeros, then a digit that is not
_NONZERO_FRACTION = f'"." "0"{{0,{MAX_DIGITS - 1}}} [1-9] [0-9]{{0,{MAX_DIGITS - 1}}}'
_ZEROS = f'"." "0"{{1,{MAX_DIGITS}}}'
_BEYOND = 10.0**MAX_DIGITS


class EmptyRange(ValueError):
    """The bounds leave no value (minimum 5, maximum 1)."""


@dataclass(frozen=True)
class _Bound:
    value: float
    open: bool  # the value itself is excluded


def bounded_number_rule(schema: Mapping[str, object]) -> str:
    """The GBNF alternatives (without trailing space) for the integers or numbers `schema` allows."""
    lower, upper = _bounds(schema)
    if (
        lower is not None
        and upper is not None
        and (lower.value > upper.value or (lower.value == upper.value and (lower.open or upper.open)))
    ):
        raise EmptyRange(f"no number lies within {_describe(lower, upper)}")
    # A bound past MAX_DIGITS digits is left out: numerals are that long at most, and a rule a digit of the bound
    # (1e308 has 309) would make a grammar hundreds of times the schema's size.
    lower = None if lower is not None and abs(lower.value) >= _BEYOND else lower
    upper = None if upper is not None and abs(upper.value) >= _BEYOND else upper
    if schema.get("type") == "integer":
        low = None if lower is None else _integer_at_least(lower)
        high = None if upper is None else _integer_at_most(upper)
        if low is not None and high is not None and low > high:
            raise EmptyRange(f"no integer lies within {_describe(lower, upper)}")
        return _integers(low, high)
    return _decimals(_whole(lower, up=False), _whole(upper, up=True), lower, upper)


def _bounds(schema: Mapping[str, object]) -> tuple[_Bound | None, _Bound | None]:
    def number(key: str) -> float | None:
        value = schema.get(key)
        # draft 4 wrote exclusiveMinimum: true beside minimum; that is read with minimum below
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    lows = [_Bound(value, False) for value in [number("minimum")] if value is not None]
    highs = [_Bound(value, False) for value in [number("maximum")] if value is not None]
    if schema.get("exclusiveMinimum") is True and lows:
        lows = [_Bound(lows[0].value, True)]
    if schema.get("exclusiveMaximum") is True and highs:
        highs = [_Bound(highs[0].value, True)]
    if (value := number("exclusiveMinimum")) is not None:
        lows.append(_Bound(value, True))
    if (value := number("exclusiveMaximum")) is not None:
        highs.append(_Bound(value, True))
    # the tightest of each side; at one value, the open one
    lower = max(lows, key=lambda bound: (bound.value, bound.open), default=None)
    upper = min(highs, key=lambda bound: (bound.value, not bound.open), default=None)
    return lower, upper


def _describe(lower: _Bound | None, upper: _Bound | None) -> str:
    left = "(-inf" if lower is None else f"{'(' if lower.open else '['}{lower.value:g}"
    right = "inf)" if upper is None else f"{upper.value:g}{')' if upper.open else ']'}"
    return f"{left}, {right}"


def _integer_at_least(bound: _Bound) -> int:
    low = math.ceil(bound.value)
    return low + 1 if bound.open and low == bound.value else low


def _integer_at_most(bound: _Bound) -> int:
    high = math.floor(bound.value)
    return high - 1 if bound.open and high == bound.value else high


def _whole(bound: _Bound | None, *, up: bool) -> _Bound | None:
    """A whole bound as it is; a fractional one widened to the whole number beyond it, closed."""
    if bound is None or bound.value.is_integer():
        return bound
    return _Bound(float(math.ceil(bound.value) if up else math.floor(bound.value)), False)


def _group(alternatives: list[str]) -> str:
    return " | ".join(f"({alternative})" for alternative in alternatives)


def _same_length(low: str, high: str) -> str:
    """Digit strings of one length from `low` to `high` (low <= high)."""
    if len(low) == 1:
        return f'"{low}"' if low == high else f"[{low}-{high}]"
    rest = len(low) - 1
    if low[0] == high[0]:
        return f'"{low[0]}" ({_same_length(low[1:], high[1:])})'
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return f"[{low[0]}-{high[0]}] [0-9]{{{rest}}}"
    alternatives = [f'"{low[0]}" ({_same_length(low[1:], "9" * rest)})']
    if int(high[0]) - int(low[0]) > 1:
        alternatives.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}] [0-9]{{{rest}}}")
    alternatives.append(f'"{high[0]}" ({_same_length("0" * rest, high[1:])})')
    return _group(alternatives)


def _naturals(low: int, high: int | None) -> str:
    """0 <= low <= high: the integers from low to high (no end with None, up to MAX_DIGITS digits), written
    without leading zeros."""
    alternatives = []
    last_length = MAX_DIGITS if high is None else len(str(high))
    for length in range(len(str(low)), last_length + 1):
        start = max(low, 10 ** (length - 1) if length > 1 else 0)
        end = 10**length - 1 if high is None else min(high, 10**length - 1)
        if start > end:
            continue
        if high is None and start == 10 ** (length - 1) and length > 1:
            alternatives.append(f"[1-9] [0-9]{{{length - 1},{MAX_DIGITS - 1}}}")  # every longer number at once
            break
        alternatives.append(_same_length(str(start), str(end)))
    return _group(alternatives)


def _integers(low: int | None, high: int | None) -> str:
    alternatives = []
    if low is None or low < 0:  # negatives: "-" and a magnitude from max(1, -high) to -low
        smallest = 1 if high is None or high >= 0 else -high
        alternatives.append(f'"-" ({_naturals(smallest, None if low is None else -low)})')
    if high is None or high >= 0:
        alternatives.append(_naturals(0 if low is None else max(low, 0), high))
    return _group(alternatives)


def _decimals(
    lower: _Bound | None, upper: _Bound | None, asked_lower: _Bound | None, asked_upper: _Bound | None
) -> str:
    """Decimal numerals between whole bounds (either may be None), each side open or closed."""
    if (
        lower is not None
        and upper is not None
        and (lower.value > upper.value or (lower.value == upper.value and (lower.open or upper.open)))
    ):
        raise EmptyRange(f"no number lies within {_describe(asked_lower, asked_upper)}")
    alternatives = []
    if lower is None or lower.value < 0:  # negatives: "-" and a magnitude above max(0, -upper) up to -lower
        smallest = _Bound(0.0, True) if upper is None or upper.value >= 0 else _Bound(-upper.value, upper.open)
        largest = None if lower is None else _Bound(-lower.value, lower.open)
        alternatives.append(f'"-" ({_group(_magnitudes(smallest, largest))})')
    if upper is None or upper.value > 0 or (upper.value == 0 and not upper.open):
        start = _Bound(0.0, False) if lower is None or lower.value < 0 else lower
        alternatives.extend(_magnitudes(start, upper))
    return _group(alternatives)


def _magnitudes(low: _Bound, high: _Bound | None) -> list[str]:
    """0 <= low <= high, whole: decimal numerals from low to high (no end with None)."""
    first, last = int(low.value), None if high is None else int(high.value)
    if last is not None and first == last:  # the one value (both sides closed: checked by the caller)
        return [f'"{first}" ({_ZEROS})?']
    alternatives = [f'"{first}" {_NONZERO_FRACTION}' if low.open else f'"{first}" ({_FRACTION})?']
    if last is None or first + 1 <= last - 1:
        alternatives.append(f"({_naturals(first + 1, None if last is None else last - 1)}) ({_FRACTION})?")
    if high is not None and not high.open:
        alternatives.append(f'"{last}" ({_ZEROS})?')
    return alternatives
