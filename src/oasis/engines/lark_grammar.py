"""A custom tool's lark grammar (OpenAI's `{"syntax": "lark"}`): read by the lark package into plain rules that an
engine turns into its own grammar form, and used to check a call's input against it.

The grammar starts at `start`. `%import` reads lark's bundled `common` grammar only: a request must not make the
server read its files. Text is matched without a separate lexer (lark's Earley parser with its complete dynamic
lexer), as a grammar held token by token matches it: a terminal may end wherever its pattern allows."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from lark import Lark
from lark.exceptions import LarkError

START = "start"
# The JSON Schema keyword that holds a string to a lark grammar (a custom tool's `input`, as a model is shown it).
LARK_SCHEMA_KEY = "x-lark-grammar"
# Grammars longer than this are refused: each is read into a parser, and a tool's input is matched with it.
MAX_GRAMMAR_CHARS = 64 * 1024


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
        parser = Lark(definition, parser="earley", lexer="dynamic_complete", start=START, import_paths=[])
    except LarkError as exc:
        raise UnusableGrammar(f"not a lark grammar this server reads: {_first_line(exc)}") from None
    except RecursionError:
        raise UnusableGrammar("the grammar nests too deeply") from None
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
