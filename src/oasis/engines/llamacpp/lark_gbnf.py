"""GBNF for a JSON string whose value a lark grammar (engines/lark_grammar.py) matches: a custom tool's input,
which the model writes as the `input` of a JSON call.

Lark's rules are already plain alternatives of symbols (lark expands `?`, `*`, `+` and templates into helper rules);
its terminals are regular expressions, written by pattern_grammar.py as JSON writes their text. Two things differ
from lark: llama.cpp refuses left recursion, which lark grammars use freely (`expr: expr "+" term | term`, and
every `x*` lark expands), so it is rewritten into right recursion (the same language); and `%ignore`d terminals are
written before each terminal and at the end, where a lexer would have dropped them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

from oasis.engines.lark_grammar import START, LarkGrammar, Production, UnusableGrammar
from oasis.engines.llamacpp.pattern_grammar import UnusablePattern, regex_body_rule

# Left recursion is removed by substituting rules into each other, which can multiply alternatives: past this
# many the grammar is refused rather than written out.
MAX_SUBSTITUTED_ALTERNATIVES = 4096
_IGNORED = "%ignored"  # the symbol standing for any run of ignored terminals


def lark_string_rules(grammar: LarkGrammar, definition: str) -> tuple[dict[str, str], str]:
    """GBNF rules (name -> body) and the expression for the JSON string (quotes included) they admit. Rule names
    carry a digest of the definition, so two grammars' rules never meet in one GBNF."""
    prefix = "lark-" + hashlib.sha256(definition.encode()).hexdigest()[:8] + "-"
    rules = _without_left_recursion(_with_ignored(grammar))
    # numbered, so that no two names meet (a template's name, `t{a_b,c}`, holds characters GBNF names cannot)
    names = {
        name: f"{prefix}{number}-{_gbnf_name(name)}"
        for number, name in enumerate([*grammar.terminals, *rules, _IGNORED])
    }
    written: dict[str, str] = {}
    for name, regex in grammar.terminals.items():
        try:
            written[names[name]] = regex_body_rule(_WITHOUT_LOOKBEHIND.get(regex, regex))
        except UnusablePattern as exc:
            raise UnusableGrammar(f"terminal {name}: {exc}") from None
    for name, productions in rules.items():
        written[names[name]] = " | ".join(
            " ".join(names[symbol] for symbol in production) or '""' for production in productions
        )
    if grammar.ignored:
        written[names[_IGNORED]] = "(" + " | ".join(names[name] for name in grammar.ignored) + ")*"
    return written, f'"\\"" {names[START]} "\\""'


def _gbnf_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")  # for the reader only: the number makes it unique


# Terminals of lark's `common` grammar written with a lookbehind, which GBNF cannot hold, and the language lark
# matches them in without one. ESCAPED_STRING: a quoted string whose closing quote is the first unescaped one (its
# `.*?` is lazy) and holds no newline.
_WITHOUT_LOOKBEHIND = {'".*?(?<!\\\\)(\\\\\\\\)*?"': '"(?:[^"\\\\\\n]|\\\\[^\\n])*"'}


def _with_ignored(grammar: LarkGrammar) -> dict[str, list[Production]]:
    """The rules with the ignored terminals' place written in: before each terminal, and at the end of `start`."""
    if not grammar.ignored:
        return {name: list(productions) for name, productions in grammar.rules.items()}
    rules = {
        name: [tuple(_ignored_before_terminals(production, grammar)) for production in productions]
        for name, productions in grammar.rules.items()
    }
    rules[START] = [(*production, _IGNORED) for production in rules[START]]
    return rules


def _ignored_before_terminals(production: Production, grammar: LarkGrammar) -> Iterator[str]:
    for symbol in production:
        if symbol in grammar.terminals:
            yield _IGNORED
        yield symbol


def _without_left_recursion(rules: dict[str, list[Production]]) -> dict[str, list[Production]]:
    """The same language without a rule that can begin with itself: within each group of rules that can begin
    with one another, each is substituted into those after it and its direct recursion made a tail
    (A: A x | y  becomes  A: y A', A': x A' | empty)."""
    rules = {name: list(productions) for name, productions in rules.items()}
    empty = _may_be_empty(rules)
    for group in _left_corner_cycles(rules, empty):
        for index, name in enumerate(group):
            for earlier in group[:index]:
                leading = sum(production[:1] == (earlier,) for production in rules[name])
                if (
                    len(rules[name]) + leading * (len(rules[earlier]) - 1) > MAX_SUBSTITUTED_ALTERNATIVES
                ):  # before writing them
                    raise UnusableGrammar(f"rule {name} has too many alternatives once its left recursion is removed")
                rules[name] = [
                    expanded
                    for production in rules[name]
                    for expanded in (
                        [(*other, *production[1:]) for other in rules[earlier]]
                        if production[:1] == (earlier,)
                        else [production]
                    )
                ]
            recursive = [production[1:] for production in rules[name] if production[:1] == (name,)]
            if not recursive:
                continue
            others = [production for production in rules[name] if production[:1] != (name,)]
            if not others:
                raise UnusableGrammar(f"rule {name} never ends: each of its alternatives begins with itself")
            tail = _fresh_name(f"{name}__tail", rules)
            rules[name] = [(*production, tail) for production in others]
            rules[tail] = [(*rest, tail) for rest in recursive if rest] + [()]
    still = _left_corner_cycles(rules, _may_be_empty(rules))
    if still:
        raise UnusableGrammar(
            f"rule {still[0][0]} can begin with itself after rules that may be empty, which llama.cpp cannot hold"
        )
    return rules


def _fresh_name(name: str, rules: dict[str, list[Production]]) -> str:
    while name in rules:
        name += "_"
    return name


def _may_be_empty(rules: dict[str, list[Production]]) -> set[str]:
    """The rules that can match the empty string (terminals never do: lark refuses those that could), and the
    ignored terminals' place, which may be empty too."""
    empty = {_IGNORED}
    changed = True
    while changed:
        changed = False
        for name, productions in rules.items():
            if name not in empty and any(all(symbol in empty for symbol in p) for p in productions):
                empty.add(name)
                changed = True
    return empty


def _left_corners(rules: dict[str, list[Production]], empty: set[str], name: str) -> Iterator[str]:
    """The rules `name` can begin with: each production's first symbol, and those after rules that may be empty."""
    for production in rules[name]:
        for symbol in production:
            if symbol in rules:
                yield symbol
            if symbol not in empty:
                break


def _left_corner_cycles(rules: dict[str, list[Production]], empty: set[str]) -> list[list[str]]:
    """The groups of rules that can begin with one another (strongly connected, with a cycle), each in the order
    the grammar gives them (Tarjan's algorithm, iteratively: a grammar's depth is the client's to choose)."""
    edges = {name: sorted(set(_left_corners(rules, empty, name)), key=list(rules).index) for name in rules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    order = list(rules)
    for root in order:
        if root in index:
            continue
        work = [(root, 0)]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, position = work[-1]
            if position < len(edges[node]):
                work[-1] = (node, position + 1)
                successor = edges[node][position]
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, 0))
                elif successor in on_stack:
                    low[node] = min(low[node], index[successor])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1 or node in edges[node]:
                    groups.append(sorted(group, key=order.index))
    return groups
