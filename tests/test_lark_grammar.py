"""Custom tools' lark grammars (engines/lark_grammar.py, engines/llamacpp/lark_gbnf.py): the GBNF written for a
grammar admits exactly the JSON strings whose value the grammar matches. The GBNF is read back into lark (its
literals and classes as regular expressions) and both are asked about the same strings; llama.cpp's parsing of the
GBNF is tested through the chat API (tests/api/test_chat_tools.py)."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from oasis.engines.lark_grammar import UnusableGrammar, read_lark
from oasis.engines.llamacpp.lark_gbnf import lark_string_rules
from oasis.protocol.extensions import ChatCompletionRequest
from oasis.services.chat.tools import fits, plan_tools

# (definition, strings it matches, strings it does not)
GRAMMARS = [
    (  # left recursion, as lark grammars write sums; ignored spaces; a common import
        r"""
        start: expr
        expr: expr "+" term | expr "-" term | term
        term: NUMBER | "(" expr ")"
        %import common.NUMBER
        %import common.WS_INLINE
        %ignore WS_INLINE
        """,
        ["1", "1+2", " 1 + (2 - 3) ", "((4))", "1.5+2e3"],
        ["", "+", "1+", "(1", "1 2", "a"],
    ),
    (  # repetition lark expands into left-recursive helpers, optional parts, a case-insensitive keyword
        r"""
        start: "select"i NAME ("," NAME)* [WHERE]
        WHERE: " where " NAME "=" /[0-9]+/
        NAME: /[a-z_]+/
        %ignore " "
        """,
        ["SELECT a", "select a,b , c", "Select x where y=1", "select   a"],
        ["select", "selecta b", "select a,", "select a where y=", "select A"],
    ),
    (  # indirect left recursion
        r"""
        start: a
        a: b "x" | "y"
        b: a "z" | "w"
        """,
        ["y", "wx", "yzx", "wxzx", "yzxzx"],
        ["", "x", "yz", "wxz", "zx"],
    ),
    (  # quotes, backslashes and newlines: written as JSON escapes
        r"""
        start: LINE+
        LINE: /"[^"\n]*"\n/ | /\\+\n/
        """,
        ['"a b"\n', '""\n\\\\\n', '"x"\n"y"\n'],
        ['"a"', '"a\nb"\n', "\\"],
    ),
    (  # templates, priorities and aliases change nothing of the language
        r"""
        start: _list{item} -> items
        _list{x}: x (";" x)*
        item.2: DIGIT+
        %import common.DIGIT
        """,
        ["1", "1;22;333"],
        ["", ";", "1;", "a"],
    ),
]
GRAMMARS += [
    (  # templates: their instances' names hold characters GBNF names cannot, and must stay apart
        r"""
        start: t{a_b, c} t{a, b_c}
        t{x, y}: x y
        a_b: "1"
        c: "2"
        a: "3"
        b_c: "4"
        """,
        ["1234"],
        ["3434", "1212", "3412", "12", ""],
    ),
    (  # lark's ESCAPED_STRING is written with a lookbehind: held here by the same language without one
        r"""
        start: ESCAPED_STRING ("," ESCAPED_STRING)*
        %import common.ESCAPED_STRING
        """,
        ['"a"', '"a\\"b","c"', '""', '"\\\\"'],
        ['"a', 'a"', '"a\\"', '"a\nb"', '"a",', '"a"b"'],  # lark's lazy match ends at the first bare quote
    ),
]
ALPHABET = '0123456789+-() .exayzwSELCTselct,_=;"\\\n'


class _Gbnf:
    """Reads GBNF (as these modules write it: literals, classes, names, groups, `|`, `*`, `+`, `?`, `{m,n}`) and
    tells whether it admits a text, by descent that remembers where each rule may end from each position. A rule
    that can begin with itself is an error here, as it is in llama.cpp."""

    _TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|[A-Za-z0-9-]+|\{\d+(?:,\d*)?\}|[()|*+?])')

    def __init__(self, rules: dict[str, str], root: str) -> None:
        self.rules = {name: self._parse(body) for name, body in rules.items()}
        self.root = self._parse(root)

    def admits(self, text: str) -> bool:
        self.text, self.ends, self.open = text, {}, set()
        return len(text) in self._match(self.root, 0)

    def _parse(self, body: str) -> Any:
        tokens = self._TOKEN.findall(body)
        assert "".join(tokens) == body.replace(" ", ""), body
        tree, position = self._alternatives(tokens, 0)
        assert position == len(tokens), body
        return tree

    def _alternatives(self, tokens: list[str], position: int) -> tuple[Any, int]:
        choices = [[]]
        while position < len(tokens) and tokens[position] != ")":
            if tokens[position] == "|":
                choices.append([])
                position += 1
                continue
            item, position = self._item(tokens, position)
            choices[-1].append(item)
        return ("or", [("seq", items) for items in choices]), position

    def _item(self, tokens: list[str], position: int) -> tuple[Any, int]:
        token = tokens[position]
        if token == "(":
            item, position = self._alternatives(tokens, position + 1)  # to the closing parenthesis
        elif token.startswith('"'):
            item = ("text", re.sub(r"\\(x..|u....|U........|.)", _unescaped, token[1:-1]))
        elif token.startswith("["):
            item = ("class", re.compile(token))  # its escapes (\xHH, \uHHHH, \UHHHHHHHH) are Python's too
        else:
            item = ("rule", token)
        position += 1
        while position < len(tokens) and (tokens[position] in "*+?" or tokens[position].startswith("{")):
            operator = tokens[position]
            low, high = {"*": (0, None), "+": (1, None), "?": (0, 1)}.get(operator, (None, None))
            if operator.startswith("{"):
                low_text, comma, high_text = operator[1:-1].partition(",")
                low, high = int(low_text), (int(high_text) if high_text else None) if comma else int(low_text)
            item = ("repeat", item, low, high)
            position += 1
        return item, position

    def _match(self, node: Any, start: int) -> set[int]:
        kind = node[0]
        if kind == "text":
            return {start + len(node[1])} if self.text.startswith(node[1], start) else set()
        if kind == "class":
            return {start + 1} if start < len(self.text) and node[1].fullmatch(self.text[start]) else set()
        if kind == "or":
            return {end for choice in node[1] for end in self._match(choice, start)}
        if kind == "seq":
            ends = {start}
            for item in node[1]:
                ends = self._after(item, ends)
            return ends
        if kind == "repeat":
            _, item, low, high = node
            ends = {start}
            for _ in range(low):
                ends = self._after(item, ends)
            reached, count = set(ends), low
            while ends and (high is None or count < high):
                # a place reached with fewer repetitions has as many left to go: the later arrival adds nothing
                ends = self._after(item, ends) - reached
                reached |= ends
                count += 1
            return reached
        key = (node[1], start)
        if key not in self.ends:
            assert key not in self.open, f"rule {node[1]} begins with itself"
            self.open.add(key)
            self.ends[key] = self._match(self.rules[node[1]], start)
            self.open.discard(key)
        return self.ends[key]

    def _after(self, node: Any, starts: set[int]) -> set[int]:
        return {end for start in starts for end in self._match(node, start)}


def _unescaped(escape: re.Match[str]) -> str:
    code = escape.group(1)
    return chr(int(code[1:], 16)) if code[0] in "xuU" and len(code) > 1 else {"n": "\n", "t": "\t"}.get(code, code)


@pytest.mark.parametrize(("definition", "matching", "other"), GRAMMARS)
def test_the_rules_admit_exactly_the_strings_the_grammar_matches(
    definition: str, matching: list[str], other: list[str]
) -> None:
    grammar = read_lark(definition)
    rules, root = lark_string_rules(grammar, definition)
    written = _Gbnf(rules, root)
    generator = random.Random(definition)
    randoms = ["".join(generator.choice(ALPHABET) for _ in range(generator.randint(0, 7))) for _ in range(300)]
    for value in matching:
        assert grammar.accepts(value), value
    for value in other:
        assert not grammar.accepts(value), value
    for value in matching + other + randoms:
        assert written.admits(json.dumps(value, ensure_ascii=False)) == grammar.accepts(value), value


def test_no_rule_can_begin_with_itself() -> None:
    """llama.cpp refuses left recursion: no rule's first symbol leads back to it."""
    definition = GRAMMARS[2][0]
    rules, _root = lark_string_rules(read_lark(definition), definition)
    firsts = {name: {alternative.split()[0] for alternative in body.split(" | ")} for name, body in rules.items()}
    for name in rules:
        seen, frontier = set(), set(firsts[name])
        while frontier:
            seen |= frontier
            frontier = {first for symbol in frontier if symbol in firsts for first in firsts[symbol]} - seen
        assert name not in seen, (name, rules)


@pytest.mark.parametrize(
    ("definition", "reason"),
    [
        ("start: WORD", "WORD"),  # never defined (not imported)
        ("start: a\n%import foo.a", "only lark's `common`"),  # no grammar files read off the server's disk
        ('start: x\nx: y x "a" | "b"\ny: "c" |', "may be empty"),  # left recursion behind a rule that may be empty
        ('start: start "a"', "never ends"),
        ("start: /(?=a)b/", "lookahead"),
        ("start: /(a)\\1/", "backreference"),
        ("not: a: grammar", "not a lark grammar"),
        ('rule: "a"', "not a lark grammar"),  # no start
        ("start: /[/", "not a lark grammar"),  # a terminal that is no regex
        ("start: A\nA: /a{99999999999}/", "not a lark grammar"),
        # each optional part doubles lark's alternatives; each use of a terminal copies it: refused before lark
        # writes them out, which takes lark minutes here
        ("start: " + " ".join(f'"{letter}"?' for letter in "abcdefghijklmnopqrstuvwx"), "alternatives"),
        ('start: ("a" | "b" | "c")~1..12', "alternatives"),
        ('start: T20\nT0: "a" | "b"\n' + "".join(f"T{i}: T{i - 1} T{i - 1}\n" for i in range(1, 21)), "too large"),
    ],
)
def test_what_cannot_be_held_is_refused_with_the_reason(definition: str, reason: str) -> None:
    with pytest.raises(UnusableGrammar, match=re.escape(reason)):
        lark_string_rules(read_lark(definition), definition)


def test_a_call_fits_a_custom_tool_only_when_its_input_is_in_the_grammar() -> None:
    """A call a model wrote freely (tool_choice auto) that misses its grammar is written again under it."""
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "1 + 2?"}],
            "tools": [
                {
                    "type": "custom",
                    "custom": {
                        "name": "add",
                        "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": GRAMMARS[0][0]}},
                    },
                }
            ],
        }
    )
    plan = plan_tools(request)
    assert plan is not None
    assert fits(plan, "add", json.dumps({"input": "1 + (2 - 3)"}))
    assert not fits(plan, "add", json.dumps({"input": "1 + two"}))
    assert not fits(plan, "add", json.dumps({"text": "1 + 2"}))
    assert fits(plan, "add", "1 + 2") and not fits(plan, "add", "1 +")  # the input written bare, not as JSON
    # an input too long to check in good time is taken as a misfit (and written again under the grammar)
    assert not fits(plan, "add", json.dumps({"input": "+".join(["1"] * 400)}))


def test_a_regex_custom_tools_input_fits_only_when_it_matches_however_it_was_written() -> None:
    request = ChatCompletionRequest.model_validate(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Book the first of May."}],
            "tools": [
                {
                    "type": "custom",
                    "custom": {
                        "name": "book",
                        "format": {
                            "type": "grammar",
                            "grammar": {"syntax": "regex", "definition": r"\d{4}-\d{2}-\d{2}"},
                        },
                    },
                }
            ],
        }
    )
    plan = plan_tools(request)
    assert plan is not None
    assert fits(plan, "book", json.dumps({"input": "2025-05-01"})) and fits(plan, "book", "2025-05-01")
    assert not fits(plan, "book", json.dumps({"input": "May 1"})) and not fits(plan, "book", "May 1")
