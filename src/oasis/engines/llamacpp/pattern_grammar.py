"""GBNF for a JSON string whose value matches a regular expression (JSON Schema's `pattern`; a custom tool's regex
grammar). llama-cpp-python's converter misreads escapes (`\\d{2}` became a literal `d`, its repetition lost) and
refuses patterns not anchored at both ends; JSON Schema's patterns match anywhere in the string.

The regex is parsed by Python's own parser, so its syntax is Python's; the grammar covers the string as JSON writes
it: a `"`, a backslash or a control character the regex allows is written as its JSON escape. Classes such as
`\\d`, `\\w` and `\\s` are their ASCII forms; ignoring case (`(?i)`, whole or scoped) folds letters as Python's
`re` does. Lookarounds, backreferences, word boundaries and `(?m)` have no grammar form and are refused
(UnusablePattern).
"""

from __future__ import annotations

import _sre  # type: ignore[import-not-found,unused-ignore]
import bisect
import json
import re
from functools import cache
from re import _casefix, _parser  # type: ignore[attr-defined,unused-ignore]
from re import _constants as sre  # type: ignore[attr-defined,unused-ignore]
from typing import Any

MAX_CODE_POINT = 0x10FFFF
# As the schema converter's repetition bounds (native.MAX_GRAMMAR_REPETITION): llama.cpp writes a bound out as
# that many copies of its rule.
MAX_REPETITION = 256

Ranges = list[tuple[int, int]]  # sorted, disjoint, inclusive

_CATEGORIES: dict[Any, Ranges] = {
    sre.CATEGORY_DIGIT: [(0x30, 0x39)],
    sre.CATEGORY_WORD: [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)],
    sre.CATEGORY_SPACE: [(0x09, 0x0D), (0x20, 0x20)],
}
_NEGATED_CATEGORIES = {
    sre.CATEGORY_NOT_DIGIT: sre.CATEGORY_DIGIT,
    sre.CATEGORY_NOT_WORD: sre.CATEGORY_WORD,
    sre.CATEGORY_NOT_SPACE: sre.CATEGORY_SPACE,
}
# What JSON writes raw inside a string: anything but a quote, a backslash and the control characters.
_RAW_IN_JSON: Ranges = [(0x20, 0x21), (0x23, 0x5B), (0x5D, 0xD7FF), (0xE000, MAX_CODE_POINT)]  # no surrogates
_ANY_BUT_NEWLINE: Ranges = [(0, 0x09), (0x0B, MAX_CODE_POINT)]
_STARTS = {sre.AT_BEGINNING, sre.AT_BEGINNING_STRING}
_ENDS = {sre.AT_END, sre.AT_END_STRING}


class UnusablePattern(ValueError):
    """The pattern is not a regular expression, or uses what a grammar cannot express."""


def pattern_string_rule(pattern: str) -> str:
    """A GBNF expression for the JSON string (quotes included) whose value matches `pattern` as JSON Schema reads
    it: anywhere in the string unless anchored with `^` and `$` (which match only at the string's ends, as
    ECMAScript's do, also when they open or close each alternative)."""
    try:
        tree = _parser.parse(pattern)
    except Exception as exc:  # re.error, and RecursionError for absurd nesting
        raise UnusablePattern(f"the pattern {pattern!r} is not a regular expression: {exc}") from None
    return f'"\\"" ({_whole(list(tree), _flags(tree.state.flags), "open", "open")}) "\\""'


def regex_body_rule(regex: str) -> str:
    """A GBNF expression for the text inside a JSON string (as JSON writes it) that `regex` matches whole, as
    Python's `re.fullmatch` does (a lark terminal)."""
    try:
        tree = _parser.parse(regex)
    except Exception as exc:  # re.error, and RecursionError for absurd nesting
        raise UnusablePattern(f"{regex!r} is not a regular expression: {exc}") from None
    return _whole(list(tree), _flags(tree.state.flags), "anchored", "anchored")


# Flags that change what a grammar must hold (ASCII: which letters ignoring case folds); verbose and unicode only
# change how the pattern was read.
_MEANINGFUL_FLAGS = re.IGNORECASE | re.DOTALL | re.ASCII


def _flags(flags: int) -> int:
    if flags & re.MULTILINE:
        raise UnusablePattern("the flag (?m) has no grammar form")
    return flags & _MEANINGFUL_FLAGS


# Where a sequence stands at one end of the string: not there (None), there and anchored already ("anchored": a
# further anchor changes nothing), or there and not anchored yet ("open": without an anchor, anything may lie
# between the string's end and the sequence).
Edge = str | None


def _whole(items: list[Any], flags: int, start: Edge, end: Edge) -> str:
    """A sequence that may begin or end the string, anchors read where they are meant: at its edges, and at the
    edges of the alternatives and groups it opens or closes with."""
    while items and start and items[0][0] is sre.AT and items[0][1] in _STARTS:
        items, start = items[1:], "anchored"
    while items and end and items[-1][0] is sre.AT and items[-1][1] in _ENDS:
        items, end = items[:-1], "anchored"
    if not items:
        return _anything() if "open" in (start, end) else '""'
    parts = []
    for index, (op, value) in enumerate(items):
        at_start = start if index == 0 else None
        at_end = end if index == len(items) - 1 else None
        if (at_start or at_end) and op is sre.BRANCH:
            parts.append("(" + " | ".join(_whole(list(b), flags, at_start, at_end) for b in value[1]) + ")")
            continue
        if (at_start or at_end) and op is sre.SUBPATTERN:
            parts.append(f"({_whole(list(value[3]), _scoped(flags, value), at_start, at_end)})")
            continue
        part = _item(op, value, flags)
        if at_start == "open":
            part = f"{_anything()} {part}"
        if at_end == "open":
            part = f"{part} {_anything()}"
        parts.append(part)
    return " ".join(part for part in parts if part)


def _anything() -> str:
    return f"{_char_choice(_RAW_IN_JSON + _controls_and_escaped())}*"


def _controls_and_escaped() -> Ranges:
    return [(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)]


def _sequence(items: list[Any], flags: int) -> str:
    parts = [_item(op, value, flags) for op, value in items]
    return " ".join(part for part in parts if part) or '""'


def _scoped(flags: int, subpattern: Any) -> int:
    """The flags inside a group such as `(?i:...)` or `(?-s:...)`."""
    _group, add_flags, del_flags, _inner = subpattern
    return _flags((flags | add_flags) & ~del_flags)


def _item(op: Any, value: Any, flags: int) -> str:
    ignore_case = bool(flags & re.IGNORECASE)
    ascii_only = bool(flags & re.ASCII)
    if op is sre.LITERAL:
        return _char_choice(_case_folded([(value, value)], ascii_only) if ignore_case else [(value, value)])
    if op is sre.NOT_LITERAL:
        excluded = _case_folded([(value, value)], ascii_only) if ignore_case else [(value, value)]
        return _char_choice(_subtract([(0, MAX_CODE_POINT)], excluded))
    if op is sre.ANY:
        return _char_choice([(0, MAX_CODE_POINT)] if flags & re.DOTALL else _ANY_BUT_NEWLINE)
    if op is sre.IN:
        return _char_choice(_class_ranges(value, ignore_case, ascii_only))
    if op is sre.BRANCH:
        return "(" + " | ".join(_sequence(list(branch), flags) for branch in value[1]) + ")"
    if op is sre.SUBPATTERN:
        return f"({_sequence(list(value[3]), _scoped(flags, value))})"
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        low, high, inner = value
        if _may_be_empty(list(inner)) and (high is sre.MAXREPEAT or high == sre.MAXREPEAT):
            # llama.cpp writes `x*` as a rule that recurses through x, which it refuses when x may be empty
            raise UnusablePattern("an unbounded repetition of something that may be empty, such as (a|)*")
        return _repeated(f"({_sequence(list(inner), flags)})", low, high)
    raise UnusablePattern(f"{str(op).lower()} ({_NAMES.get(str(op), 'this construct')}) has no grammar form")


_NAMES = {
    "ASSERT": "a lookahead or lookbehind",
    "ASSERT_NOT": "a negative lookahead or lookbehind",
    "GROUPREF": "a backreference",
    "GROUPREF_EXISTS": "a conditional group",
    "AT": "a word boundary, or an anchor inside the string",
    "ATOMIC_GROUP": "an atomic group",
}


def _may_be_empty(items: list[Any]) -> bool:
    return all(_item_may_be_empty(op, value) for op, value in items)


def _item_may_be_empty(op: Any, value: Any) -> bool:
    if op is sre.BRANCH:
        return any(_may_be_empty(list(branch)) for branch in value[1])
    if op is sre.SUBPATTERN:
        return _may_be_empty(list(value[3]))
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
        return value[0] == 0 or _may_be_empty(list(value[2]))
    return op is sre.AT  # a character is never empty


def _repeated(unit: str, low: int, high: int) -> str:
    unbounded = high is sre.MAXREPEAT or high == sre.MAXREPEAT
    if low > MAX_REPETITION or (not unbounded and high > MAX_REPETITION):
        raise UnusablePattern(f"a repetition bound above {MAX_REPETITION}")
    if unbounded:
        return f"{unit}*" if low == 0 else (f"{unit}+" if low == 1 else f"{unit}{{{low},}}")
    if (low, high) == (0, 1):
        return f"{unit}?"
    return f"{unit}{{{low}}}" if low == high else f"{unit}{{{low},{high}}}"


def _class_ranges(items: list[Any], ignore_case: bool, ascii_only: bool) -> Ranges:
    ranges: Ranges = []
    negate = False
    for op, value in items:
        if op is sre.NEGATE:
            negate = True
        elif op is sre.LITERAL:
            ranges.append((value, value))
        elif op is sre.RANGE:
            ranges.append(value)
        elif op is sre.CATEGORY and value in _CATEGORIES:
            ranges.extend(_CATEGORIES[value])
        elif op is sre.CATEGORY and value in _NEGATED_CATEGORIES:
            ranges.extend(_subtract([(0, MAX_CODE_POINT)], _CATEGORIES[_NEGATED_CATEGORIES[value]]))
        else:
            raise UnusablePattern(f"the class item {op} has no grammar form")
    merged = _case_folded(ranges, ascii_only) if ignore_case else _merge(ranges)
    return _subtract([(0, MAX_CODE_POINT)], merged) if negate else merged


def _case_folded(ranges: Ranges, ascii_only: bool) -> Ranges:
    """`ranges` with every character that matches one of them under `re.IGNORECASE`: Python's simple lowercase
    mapping and its extra case pairs (the Kelvin sign with k, long s with s); ASCII letters alone under `(?a)`."""
    groups = _ASCII_CASE_GROUPS if ascii_only else _case_groups()
    added: Ranges = []
    if sum(high - low + 1 for low, high in ranges) <= 4096:
        for low, high in ranges:
            for code in range(low, high + 1):
                added.extend((other, other) for other in groups.get(code, ()))
    else:  # a wide class (a negated one): the groups it touches
        merged = _merge(ranges)
        starts = [low for low, _ in merged]
        for group in set(groups.values()):
            if any(_within(merged, starts, code) for code in group):
                added.extend((other, other) for other in group)
    return _merge(ranges + added)


def _within(merged: Ranges, starts: list[int], code: int) -> bool:
    index = bisect.bisect_right(starts, code) - 1
    return index >= 0 and merged[index][1] >= code


_ASCII_CASE_GROUPS = {
    code: (ord(chr(code).lower()), ord(chr(code).upper()))
    for code in [*range(ord("a"), ord("z") + 1), *range(ord("A"), ord("Z") + 1)]
}


@cache
def _case_groups() -> dict[int, tuple[int, ...]]:
    """Each cased character's group of characters that match one another under `re.IGNORECASE`, as Python's
    `_sre` decides it (built once, on first use: a pass over every code point)."""
    by_lower: dict[int, list[int]] = {}
    for code in range(MAX_CODE_POINT + 1):
        if _sre.unicode_iscased(code):
            by_lower.setdefault(_sre.unicode_tolower(code), []).append(code)
    for lower, extras in _casefix._EXTRA_CASES.items():
        for extra in extras:  # join the groups Python's extra cases join
            merged = sorted({*by_lower.get(lower, [lower]), *by_lower.get(extra, [extra])})
            for key in (lower, extra):
                by_lower[key] = merged
    groups: dict[int, tuple[int, ...]] = {}
    for members in by_lower.values():
        group = tuple(sorted(set(members)))
        for code in group:
            groups[code] = tuple(sorted({*groups.get(code, ()), *group}))
    return groups


def _merge(ranges: Ranges) -> Ranges:
    merged: Ranges = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def _subtract(ranges: Ranges, removed: Ranges) -> Ranges:
    left = _merge(ranges)
    for cut_low, cut_high in _merge(removed):
        kept: Ranges = []
        for low, high in left:
            if high < cut_low or low > cut_high:
                kept.append((low, high))
                continue
            if low < cut_low:
                kept.append((low, cut_low - 1))
            if high > cut_high:
                kept.append((cut_high + 1, high))
        left = kept
    return left


def _intersect(ranges: Ranges, within: Ranges) -> Ranges:
    return _subtract(ranges, _subtract([(0, MAX_CODE_POINT)], within))


def _char_choice(ranges: Ranges) -> str:
    """One character of `ranges`, as JSON writes it in a string: raw, or as its escape."""
    raw = _intersect(ranges, _RAW_IN_JSON)
    escaped = [
        _literal(chr(code))
        for low, high in _intersect(ranges, _controls_and_escaped())
        for code in range(low, high + 1)
    ]
    choices = ([_class(raw)] if raw else []) + escaped
    if not choices:
        raise UnusablePattern("a character class that no character matches")
    return choices[0] if len(choices) == 1 else "(" + " | ".join(choices) + ")"


def _class(ranges: Ranges) -> str:
    return (
        "[" + "".join(_class_char(low) + ("" if low == high else "-" + _class_char(high)) for low, high in ranges) + "]"
    )


def _class_char(code: int) -> str:
    char = chr(code)
    return char if char.isascii() and char.isalnum() else _escape(code)


def _literal(char: str) -> str:
    """The GBNF string literal of `char` as JSON writes it (`"` as `\\"`, a newline as `\\n`)."""
    written = json.dumps(char, ensure_ascii=False)[1:-1]
    return '"' + "".join(c if c.isascii() and c.isalnum() else _escape(ord(c)) for c in written) + '"'


def _escape(code: int) -> str:
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"
