"""A custom tool's lark grammar (OpenAI's `{"syntax": "lark"}`): read by the lark package into plain rules that an
engine turns into its own grammar form, and used to check a call's input against it.

The grammar starts at `start`. `%import` reads lark's bundled `common` grammar only: a request must not make the
server read its files. Text is matched without a separate lexer (lark's Earley parser with its complete dynamic
lexer), as a grammar held token by token matches it: a terminal may end wherever its pattern allows."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from lark import Lark, Token, Tree
from lark.exceptions import LarkError
from lark.grammar import Symbol
from lark.load_grammar import _parse_grammar

START = "start"
# The JSON Schema keyword that holds a string to a lark grammar (a custom tool's `input`, as a model is shown it).
LARK_SCHEMA_KEY = "x-lark-grammar"
# Grammars longer than this are refused: each is read into a parser, and a tool's input is matched with it.
MAX_GRAMMAR_CHARS = 64 * 1024
# Lark writes a rule's optional parts out as alternatives (`"a"? "b"?` is four) and copies a terminal into each
# that uses it: a short grammar can grow exponentially while lark reads it. Grammars past these sizes, as estimated
# from their text before lark reads them, are refused.
MAX_ALTERNATIVES = 5_000
MAX_TERMINAL_PARTS = 50_000
# A call's input longer than this is not checked against the grammar (lark's Earley parser may take seconds on a
# few hundred characters of an ambiguous one): it is written again under the grammar instead, as a misfit is.
MAX_CHECKED_INPUT_CHARS = 512


class UnusableGrammar(ValueError):
    """The definition is not a lark grammar this server can hold a model to."""


Production = tuple[str, ...]  # symbol names: a terminal's (in `terminals`) or a rule's


@dataclass(frozen=True)
class LarkGrammar:
    terminals: dict[str, str]  # name -> Python regular expression (its flags written inline)
    rules: dict[str, list[Production]]  # name -> its alternatives, in lark's order; `start` among them
    ignored: tuple[str, ...]  # terminals that may stand between any two others (`%ignore`)
    _parser: Lark

    def accepts(self, text: str) -> bool:
        """Whether the grammar matches `text`; False for a text too long to check (MAX_CHECKED_INPUT_CHARS)."""
        if len(text) > MAX_CHECKED_INPUT_CHARS:
            return False
        try:
            self._parser.parse(text)
        except LarkError:
            return False
        except RecursionError:  # lark's tree building on absurdly deep input
            return False
        return True


_IMPORT = re.compile(r"^\s*%import\s+(\S+)", re.MULTILINE)


@lru_cache(maxsize=32)  # reading builds a parser
def read_lark(definition: str) -> LarkGrammar:
    """The grammar `definition` writes, or UnusableGrammar saying why there is none."""
    if len(definition) > MAX_GRAMMAR_CHARS:
        raise UnusableGrammar(f"the grammar is longer than {MAX_GRAMMAR_CHARS} characters")
    for found in _IMPORT.finditer(definition):
        module = found.group(1)
        if module != "common" and not module.startswith("common."):
            raise UnusableGrammar(f"`%import {module}`: only lark's `common` grammar can be imported")
    try:
        _check_size(_parse_grammar(definition, "<grammar>"))
        parser = Lark(definition, parser="earley", lexer="dynamic_complete", start=START, import_paths=[])
    except RecursionError:
        raise UnusableGrammar("the grammar nests too deeply") from None
    except UnusableGrammar:
        raise
    except Exception as exc:  # LarkError, and re.error or OverflowError for a terminal's regex: the grammar's fault
        raise UnusableGrammar(f"not a lark grammar this server reads: {_first_line(exc)}") from None
    terminals = {terminal.name: terminal.pattern.to_regexp() for terminal in parser.terminals}
    rules: dict[str, list[Production]] = {}
    for rule in parser.rules:
        production = tuple(symbol.name for symbol in rule.expansion)
        rules.setdefault(rule.origin.name, []).append(production)
    for productions in rules.values():
        for production in productions:
            for name in production:
                if name not in terminals and name not in rules:
                    raise UnusableGrammar(f"{name} is declared but never defined")
    return LarkGrammar(terminals, rules, tuple(parser.ignore_tokens), parser)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _check_size(tree: Tree) -> None:
    """Refuses a grammar that lark would write out too large (its alternatives, its terminals' parts), estimated
    from the parsed text, where each name is still a name."""
    definitions: dict[str, tuple[bool, Tree]] = {}
    for statement in tree.children:
        node = statement.children[0] if statement.data in ("override", "extend") else statement
        if isinstance(node, Tree) and node.data in ("rule", "term"):
            name = next(str(child) for child in node.children if isinstance(child, Token))
            bodies = [child for child in node.children if isinstance(child, Tree) and child.data == "expansions"]
            definitions[name] = (node.data == "term", bodies[-1])
    widths: dict[str, float] = {}

    def term_width(name: str) -> float:
        if name not in widths:
            widths[name] = 1.0  # a terminal that names itself is lark's error to report; this only measures
            is_term, body = definitions.get(name, (True, None))
            widths[name] = measure(body, True)[1] if is_term and body is not None else 1.0
        return widths[name]

    helpers = 0.0  # the alternatives of the rules lark makes for `*` and `+`

    def measure(node: object, in_term: bool) -> tuple[float, float]:
        """(alternatives once written out, parts once terminals are copied in), capped to stay finite."""
        nonlocal helpers
        if isinstance(node, Symbol):
            return 1.0, term_width(node.name) if in_term and node.is_term else 1.0
        if not isinstance(node, Tree):
            return 1.0, 1.0
        parts = [measure(child, in_term) for child in node.children if isinstance(child, (Tree, Symbol))]
        if node.data == "expansions":
            return _capped(sum(a for a, _ in parts)), _capped(sum(w for _, w in parts))
        if node.data == "expansion":
            alternatives = 1.0
            for a, _ in parts:
                alternatives = _capped(alternatives * a)
            return alternatives, _capped(sum(w for _, w in parts))
        if node.data == "maybe":
            return _capped(parts[0][0] + 1), parts[0][1]
        if node.data == "expr":
            (alternatives, width), operator = parts[0], str(node.children[1])
            if operator == "?":
                return _capped(alternatives + 1), width
            if operator in ("*", "+"):
                helpers = _capped(helpers + 2 * alternatives)
                return 1.0, width
            bounds = [int(child) for child in node.children[2:] if isinstance(child, Token)]
            low, high = bounds[0], bounds[-1]
            written = sum(_power(alternatives, count) for count in range(low, min(high, 64) + 1))
            return _capped(written if high <= 64 else written + high), _capped(width * high)
        return _capped(max((a for a, _ in parts), default=1.0)), _capped(sum(w for _, w in parts) or 1.0)

    alternatives = 0.0
    for name, (is_term, body) in definitions.items():
        if is_term:
            if term_width(name) > MAX_TERMINAL_PARTS:
                raise UnusableGrammar(f"terminal {name} grows too large once the terminals it names are copied in")
        else:
            alternatives = _capped(alternatives + measure(body, False)[0])
    if alternatives + helpers > MAX_ALTERNATIVES:
        raise UnusableGrammar(
            f"the grammar's rules write out to more than {MAX_ALTERNATIVES} alternatives (each optional part "
            "doubles a rule's): make long runs of optional parts into rules of their own"
        )


_CAP = 1e18


def _capped(value: float) -> float:
    return min(value, _CAP)


def _power(base: float, exponent: int) -> float:
    return _CAP if base > 1 and exponent * math.log10(base) >= 18 else base**exponent
