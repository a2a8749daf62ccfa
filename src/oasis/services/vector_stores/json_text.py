"""A JSON file's text for search: `json.dumps(json.loads(raw), indent=1, ensure_ascii=False)`, laid out one value
a line, without holding a large file, its parsed value or its text whole.

Parsing a large JSON file with `json.loads` costs many times its size in Python objects (a 500 MB file of small
objects would take over 10 GB), so past `WHOLE_PARSE_LIMIT` characters `pretty_json` tokenizes the text as it
arrives and writes each token in the layout `json.dumps` gives it, checking the grammar as it goes. It is about
five times slower than `json.loads`, and differs in one way: a key repeated in an object is kept each time,
where `json.loads` keeps only the last.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator

# One token after optional whitespace; a string's inside is checked by json.loads only when it holds escapes.
_TOKEN = re.compile(
    r"""[ \t\n\r]*(?:
        (?P<string>"[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*")
      | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)
      | (?P<literal>true|false|null|NaN|Infinity|-Infinity)
      | (?P<punct>[{}\[\]:,])
    )""",
    re.VERBOSE,
)
# What may still become a token when more text arrives: an open string, number or literal.
_OPEN_TOKEN = re.compile(
    r"""[ \t\n\r]*(?:
        "[^"\\\x00-\x1f]*(?:\\.[^"\\\x00-\x1f]*)*\\?
      | -?[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]*)?
      | -?[A-Za-z]{0,8}
    )?""",
    re.VERBOSE,
)
_NUMBER_TAIL = re.compile(r"\.|[eE][-+]?")  # what only the start of a fraction or exponent can be
_WHITESPACE = " \t\n\r"
# json.loads stops near 1000 levels (Python's recursion limit); each level indents every line inside it once more.
MAX_DEPTH = 500
_FLUSH_SIZE = 1 << 20


class JSONTextError(ValueError):
    """The text is not valid JSON; the message says where."""


WHOLE_PARSE_LIMIT = 16 << 20


def json_text(pieces: Iterator[str]) -> Iterator[str]:
    """The JSON text in `pieces` laid out by `json.dumps(..., indent=1, ensure_ascii=False)`: parsed whole when
    short, streamed through `pretty_json` past WHOLE_PARSE_LIMIT. JSONTextError when it is not valid JSON."""
    head: list[str] = []
    size = 0
    for piece in pieces:
        head.append(piece)
        size += len(piece)
        if size > WHOLE_PARSE_LIMIT:
            yield from pretty_json(itertools.chain(head, pieces))
            return
    try:
        text = json.dumps(json.loads("".join(head)), indent=1, ensure_ascii=False)
    except json.JSONDecodeError as exc:
        raise JSONTextError(f"{exc.msg} (line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:  # an integer of over 4300 digits; nesting too deep
        raise JSONTextError(str(exc) or "Nested too deep") from None
    yield _without_lone_surrogates(text)


def pretty_json(pieces: Iterator[str]) -> Iterator[str]:
    """The JSON text in `pieces`, re-laid out as `json.dumps(..., indent=1, ensure_ascii=False)` writes it,
    yielded about a megabyte at a time. JSONTextError when it is not one valid JSON value."""
    return _Formatter(pieces).run()


def _without_lone_surrogates(text: str) -> str:
    """A lone surrogate (from an unpaired "\\ud800") back as its escape: it has no UTF-8 form to store or embed."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class _Formatter:
    def __init__(self, pieces: Iterator[str]) -> None:
        self._pieces = pieces
        self._buffer = ""
        self._position = 0
        self._consumed = 0  # characters dropped from the buffer's front, for error positions
        self._exhausted = False
        self._out: list[str] = []
        self._out_size = 0

    def run(self) -> Iterator[str]:
        # The open containers, "{" or "["; `expect` is what the grammar allows next.
        stack: list[str] = []
        expect = "value"
        while True:
            if self._out_size >= _FLUSH_SIZE:  # checked for every token: keys and brackets alone add up too
                yield "".join(self._out)
                self._out.clear()
                self._out_size = 0
            token = self._next_token()
            if token is None:
                if expect != "end":
                    raise JSONTextError(self._where("Expecting value" if not stack else "Unterminated container"))
                break
            kind, text = token
            if expect == "end":
                raise JSONTextError(self._where("Extra data"))
            if expect == "colon":
                if text != ":":
                    raise JSONTextError(self._where("Expecting ':' delimiter"))
                self._write(": ")
                expect = "value"
                continue
            if expect == "comma_or_close":
                if text == ",":
                    self._write(",")
                    expect = "key" if stack[-1] == "{" else "value"
                    continue
                if text == ("}" if stack[-1] == "{" else "]"):
                    stack.pop()
                    self._write("\n" + " " * len(stack) + text)
                    expect = "comma_or_close" if stack else "end"
                    continue
                raise JSONTextError(self._where("Expecting ',' delimiter"))
            if expect in ("key", "key_or_close"):
                if expect == "key_or_close" and text == "}":
                    stack.pop()
                    self._write("}")
                    expect = "comma_or_close" if stack else "end"
                    continue
                if kind != "string":
                    raise JSONTextError(self._where("Expecting property name enclosed in double quotes"))
                self._write("\n" + " " * len(stack) + self._string(text))
                expect = "colon"
                continue
            # A value is expected: after ':' or ',' in a list, at the start, or first in a list.
            if expect == "value_or_close" and text == "]":
                stack.pop()
                self._write("]")
                expect = "comma_or_close" if stack else "end"
                continue
            if stack and stack[-1] == "[":
                self._write("\n" + " " * len(stack))
            if text in ("{", "["):
                if len(stack) == MAX_DEPTH:
                    raise JSONTextError(self._where(f"Nested more than {MAX_DEPTH} levels deep"))
                self._write(text)
                stack.append(text)
                expect = "key_or_close" if text == "{" else "value_or_close"
                continue
            if kind == "punct":
                raise JSONTextError(self._where("Expecting value"))
            self._write(self._scalar(kind, text))
            expect = "comma_or_close" if stack else "end"
        yield "".join(self._out)

    def _write(self, text: str) -> None:
        self._out.append(text)
        self._out_size += len(text)

    def _next_token(self) -> tuple[str, str] | None:
        """The next token's kind and text; None at the end of the text (whitespace only left)."""
        while True:
            match = _TOKEN.match(self._buffer, self._position)
            if match is not None and (self._exhausted or not self._may_go_on(match)):
                self._position = match.end()
                kind = match.lastgroup
                assert kind is not None
                return kind, match.group(kind)
            if self._exhausted:
                if self._buffer[self._position :].strip(_WHITESPACE):
                    raise JSONTextError(self._where("Invalid JSON token"))
                return None
            if match is None and not _OPEN_TOKEN.fullmatch(self._buffer, self._position):
                # No token can come of this however much more is read: fail now rather than buffer the rest.
                raise JSONTextError(self._where("Invalid JSON token"))
            # An unfinished token is matched again from its start once the text waiting has doubled, not after
            # every piece: a 200 MB string is scanned a few times over, not once a megabyte.
            self._read_more(at_least=len(self._buffer) - self._position)

    def _may_go_on(self, match: re.Match[str]) -> bool:
        """Whether the token may go on in the next piece: it reaches the buffer's end, or it is a number followed
        by only the start of a fraction or exponent ("1e" may become "1e5")."""
        end = match.end()
        if end == len(self._buffer):
            return True
        return match.lastgroup == "number" and _NUMBER_TAIL.fullmatch(self._buffer, end) is not None

    def _read_more(self, at_least: int) -> None:
        """Reads pieces until `at_least` more characters came (one piece at least), or the text ended."""
        pieces: list[str] = []
        size = 0
        while not pieces or size < at_least:
            piece = next(self._pieces, None)
            if piece is None:
                self._exhausted = True
                break
            pieces.append(piece)
            size += len(piece)
        rest = self._buffer[self._position :].lstrip(_WHITESPACE)  # whitespace is never kept waiting
        self._consumed += len(self._buffer) - len(rest)
        self._buffer = rest + "".join(pieces)
        self._position = 0

    def _where(self, message: str) -> str:
        return f"{message} at character {self._consumed + self._position}"

    def _string(self, token: str) -> str:
        if "\\" not in token:
            return token  # no escapes: json.dumps would write it back unchanged
        try:
            text = json.loads(token)
        except json.JSONDecodeError as exc:
            raise JSONTextError(self._where(exc.msg)) from None
        return _without_lone_surrogates(json.dumps(text, ensure_ascii=False))

    def _scalar(self, kind: str, text: str) -> str:
        if kind == "string":
            return self._string(text)
        if kind == "literal":
            return text
        try:
            return json.dumps(json.loads(text))  # 1.50 -> 1.5, 1e400 -> Infinity, as json.dumps writes them
        except ValueError as exc:  # an integer of more than 4300 digits
            raise JSONTextError(self._where(str(exc))) from None
