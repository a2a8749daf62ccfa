"""Calls read as the model writes them, so that a stream sends each call's arguments as they grow, as OpenAI streams
them (instructor's partial objects, a UI showing a call being written), not whole at its end.

Only calls held to a grammar as they are written: a forced reply, JSON from its first token (`tools.call_schema`),
a call `{"name": ..., "arguments": ...}` (Llama 3's `parameters`) or a list of them (`CallStream`); and an
unforced reply's calls from where the engine's call grammar took hold (`OpenedCalls`). A call written freely may
still be written again under its grammar at its end (`ChatService._repaired`), which arguments already sent could
not take back.

The arguments are sent as `json.dumps` writes the value read whole (its separators, its escapes, its numbers), so
that the pieces a client joins are the arguments of the same reply answered whole."""

from __future__ import annotations

import codecs
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from oasis.engines.text import (
    BARE_CALL_OPENING,
    FENCE_CLOSE,
    FENCE_OPEN,
    FENCED_CALL_OPENING,
    GEMMA_CALL_HEAD,
    GEMMA_QUOTE,
    HARMONY_CALL_END,
    HARMONY_CALL_HEADER,
    CallGrammar,
    NamedCalls,
    SampledToken,
    XmlCalls,
    prefix_pattern,
)
from oasis.services.chat.reasoning import partial_suffix
from oasis.services.chat.tool_formats import is_text_parameter, json_at, parameter_value, python_value

_WHITESPACE = " \t\n\r"
_LISTED = re.compile(r"^[\s,;]*")  # between calls listed one after another
# A call's keys as families write them (tools.CallKeys): its name (Command R's `tool_name`), its arguments (Llama 3's
# and Command R's `parameters`), an id of the family's own (Command R's, Mistral Nemo's), which is not sent
_NAME_KEYS = ("name", "tool_name")
_ARGUMENTS_KEYS = ("arguments", "parameters")
_ID_KEYS = ("id", "tool_call_id")
_OPENING_WINDOW = 256  # an opening is looked for this far back from where the engine's token that opened it ends
_ENDS_A_SCALAR = re.compile(r"[\s,\]}]")
_ENDS_A_GEMMA_SCALAR = re.compile(r"[,\]}]")


@dataclass
class StreamedCall:
    name: str
    arguments: str = ""  # as sent so far


@dataclass
class CallPiece:
    """What to send now: a call's opening (`opened`: its name is known) or more of its arguments."""

    index: int
    opened: bool
    text: str  # the name when opened, else the arguments' next piece


@dataclass
class _Frame:
    kind: str  # "{" or "["
    expecting: str  # "key", "colon", "value", "comma"
    key: str | None = None  # an object's key whose value is being read
    in_arguments: bool = False  # within a call's arguments value (its pieces are sent)


@dataclass
class CallStream:
    """Feeds on the reply's text; gives the pieces that are final. Stops reading (`broken`) at anything a forced
    reply does not hold; what was sent stands, and the reply read whole says the rest."""

    calls: list[StreamedCall] = field(default_factory=list)
    broken: bool = False
    leaves_rest: bool = False  # text after the value is not the reply's (a closing tag): left `unread`, not broken
    # The call's name, written before its arguments (Mistral's `name[ARGS]{…}`): the value read is the arguments
    named: str | None = None
    # Each call `{name: arguments}` (Apertus's): a call's key is its function's name, the value its arguments
    by_name: bool = False
    _text: str = ""
    _at: int = 0
    _stack: list[_Frame] = field(default_factory=list)
    _call_depth: int | None = None  # where a call object's frame sits: 1 (one call) or 2 (in a list)
    _name: str | None = None  # the name of the call being read, before its arguments
    _string_sent: int | None = None  # of the string being read inside arguments, the raw characters sent already

    @property
    def finished(self) -> bool:
        """Whether the reply read so far is whole: its calls (or their list) closed."""
        return self._call_depth is not None and not self._stack and not self.broken

    @property
    def unread(self) -> str:
        """The text after the value, once it is whole."""
        return self._text[self._at :] if self.finished else ""

    def feed(self, text: str) -> list[CallPiece]:
        self._text += text
        pieces: list[CallPiece] = []
        while not self.broken and self._step(pieces):
            pass
        return pieces

    # --- one token at a time ----------------------------------------------------------------------------------

    def _step(self, pieces: list[CallPiece]) -> bool:
        """Reads the next token if it is whole (a string inside arguments: as much of it as is safe); False when
        more text is needed."""
        text = self._text
        self._at = at = _non_blank(text, self._at)
        if at >= len(text):
            return False
        frame = self._stack[-1] if self._stack else None
        char = text[at]
        if frame is None:
            if self._call_depth is not None and self.leaves_rest:
                return False  # what follows the value is left `unread`, for the caller to read
            if self.named is not None:  # the arguments, an object: the call opens with them
                if self._call_depth is not None or char != "{":
                    return self._break()
                self._call_depth = 0
                self.calls.append(StreamedCall(self.named))
                pieces.append(CallPiece(0, True, self.named))
                return self._open(char, pieces)
            if self._call_depth is not None or char not in "[{":
                return self._break()  # one value, a call or a list of calls
            self._call_depth = 2 if char == "[" else 1
            return self._open(char, pieces)
        if frame.expecting == "comma" or (frame.kind == "{" and frame.expecting == "key"):
            if char in "}]":
                return self._close(char, pieces)
            if frame.expecting == "comma":
                if char != ",":
                    return self._break()
                frame.expecting = "key" if frame.kind == "{" else "value"
                self._at += 1
                self._send(frame.in_arguments, ", ", pieces)
                return True
            if char != '"':
                return self._break()
            key = self._whole_string()
            if key is None:
                return False
            frame.key, frame.expecting = key, "colon"
            self._send(frame.in_arguments, json.dumps(key, ensure_ascii=False), pieces)
            return True
        if frame.expecting == "colon":
            if char != ":":
                return self._break()
            self._at += 1
            frame.expecting = "value"
            self._send(frame.in_arguments, ": ", pieces)
            return True
        # a value: of an arguments object (or list), of a call's key, or a call in the list
        if frame.kind == "[" and char == "]":  # an empty list
            return self._close(char, pieces)
        return self._value(frame, char, pieces)

    def _value(self, frame: _Frame, char: str, pieces: list[CallPiece]) -> bool:
        depth = len(self._stack)
        at_call = frame.kind == "{" and depth == self._call_depth
        if at_call and frame.in_arguments:  # arguments that are a string or a number, read on
            return self._argument_value(frame, char, pieces)
        if at_call and frame.key in _ARGUMENTS_KEYS:
            if self._name is None:
                return self._break()  # the arguments before the name: read whole at the end
            self.calls.append(StreamedCall(self._name))
            pieces.append(CallPiece(len(self.calls) - 1, True, self._name))
            self._name = None
            frame.in_arguments = True  # sent from here until this frame's value ends
            return self._argument_value(frame, char, pieces)
        if at_call and self.by_name:  # the key was the function's name
            assert frame.key is not None
            self.calls.append(StreamedCall(frame.key))
            pieces.append(CallPiece(len(self.calls) - 1, True, frame.key))
            frame.in_arguments = True
            return self._argument_value(frame, char, pieces)
        if at_call and frame.key in _ID_KEYS and char == '"':  # the family's own id: read, not sent
            if self._whole_string() is None:
                return False
            frame.expecting = "comma"
            return True
        if at_call:  # the name (or a key a call does not have)
            if frame.key not in _NAME_KEYS or char != '"':
                return self._break()
            name = self._whole_string()
            if name is None:
                return False
            self._name = name
            frame.expecting = "comma"
            return True
        if frame.kind == "[" and depth == 1 and self._call_depth == 2:  # a call in the list
            if char != "{":
                return self._break()
            frame.expecting = "comma"
            return self._open(char, pieces)
        return self._argument_value(frame, char, pieces)

    def _argument_value(self, frame: _Frame, char: str, pieces: list[CallPiece]) -> bool:
        if char in "{[":
            frame.expecting = "comma"
            return self._open(char, pieces)
        if char == '"':
            if not self._string_piece(pieces):
                return False
            frame.expecting = "comma"
            self._after_value(frame)
            return True
        scalar = _ENDS_A_SCALAR.search(self._text, self._at)
        if scalar is None:
            return False  # `12` may still be `123`, `tru` `true`
        raw = self._text[self._at : scalar.start()]
        try:
            value = json.loads(raw)
        except ValueError:  # not JSON, or an integer longer than Python converts
            return self._break()
        self._at = scalar.start()
        frame.expecting = "comma"
        self._send(True, json.dumps(value, ensure_ascii=False), pieces)
        self._after_value(frame)
        return True

    def _after_value(self, frame: _Frame) -> None:
        """Ends a call's arguments when the value just read (or the container just closed) was the whole of them."""
        if len(self._stack) == self._call_depth and frame.in_arguments:
            frame.in_arguments = False

    def _open(self, char: str, pieces: list[CallPiece]) -> bool:
        outer = self._stack[-1] if self._stack else None
        inside = outer.in_arguments if outer is not None else self._call_depth == 0  # a named call's arguments
        self._stack.append(_Frame(char, "key" if char == "{" else "value", in_arguments=inside))
        self._at += 1
        self._send(inside, char, pieces)
        return True

    def _close(self, char: str, pieces: list[CallPiece]) -> bool:
        frame = self._stack.pop()
        if (frame.kind == "{") != (char == "}") or (frame.kind == "{" and frame.expecting not in ("key", "comma")):
            return self._break()
        self._at += 1
        self._send(frame.in_arguments, char, pieces)
        outer = self._stack[-1] if self._stack else None
        if outer is not None:
            self._after_value(outer)
        return True

    def _break(self) -> bool:
        self.broken = True
        return False

    def _send(self, inside: bool, text: str, pieces: list[CallPiece]) -> None:
        if not inside or not self.calls:
            return
        call = self.calls[-1]
        call.arguments += text
        if pieces and not pieces[-1].opened and pieces[-1].index == len(self.calls) - 1:
            pieces[-1].text += text
        else:
            pieces.append(CallPiece(len(self.calls) - 1, False, text))

    # --- strings ----------------------------------------------------------------------------------------------

    def _whole_string(self) -> str | None:
        """A string (a key, a name) once it has closed."""
        found = json_at(self._text, self._at, final=False)
        if found is None or (isinstance(found, tuple) and not isinstance(found[0], str)):
            self._break()
            return None
        if not isinstance(found, tuple):
            return None  # still being written
        self._at = found[1]
        return str(found[0])

    def _string_piece(self, pieces: list[CallPiece]) -> bool:
        """Sends what can be sent of a string value inside arguments; True once it has closed."""
        start = self._at + 1  # after the opening quote
        if self._string_sent is None:
            self._send(True, '"', pieces)
            self._string_sent = 0
        index = safe = start + self._string_sent  # raw characters up to `safe` decode on their own
        text, end, closed = self._text, len(self._text), False
        while index < end:
            if text[index] == '"':
                closed = True
                break
            length = _escape_length(text, index) if text[index] == "\\" else 1
            if length == 0:
                break  # an escape not yet whole
            index += length
            safe = index
        raw = text[start + self._string_sent : safe]
        if raw:
            try:
                decoded = json.loads(f'"{raw}"')
            except json.JSONDecodeError:
                return self._break()
            self._send(True, json.dumps(decoded, ensure_ascii=False)[1:-1], pieces)
            self._string_sent += len(raw)
        if not closed:
            return False
        self._send(True, '"', pieces)
        self._at, self._string_sent = safe + 1, None
        return True


def _escape_length(text: str, index: int) -> int:
    """The length of the escape at `index` (a surrogate pair's two halves together); 0 while it is unfinished."""
    end = len(text)
    if index + 2 > end:
        return 0
    if text[index + 1] != "u":
        return 2
    if index + 6 > end:
        return 0
    if not 0xD800 <= _hex(text[index + 2 : index + 6]) <= 0xDBFF:
        return 6
    if index + 8 > end:
        return 0  # a high half: is a low half next?
    if text[index + 6 : index + 8] != "\\u":
        return 6
    if index + 12 > end:
        return 0
    return 12 if 0xDC00 <= _hex(text[index + 8 : index + 12]) <= 0xDFFF else 6


def _hex(digits: str) -> int:
    try:
        return int(digits, 16)
    except ValueError:
        return -1


_XML_KEY = r'[^\s<>"]+'  # a parameter's name, as the call grammar writes one


class _MarkupReading:
    """What the readings of a family's own markup share: fed text, they read on until they need more, stop at
    what they do not hold (`broken`), and are `finished` once their markup closed; they send each call's arguments
    as the pieces of the JSON the reader makes of them."""

    calls: list[StreamedCall]
    broken: bool
    _text: str
    _at: int
    _closed: bool

    @property
    def finished(self) -> bool:
        return self._closed and not self.broken

    @property
    def unread(self) -> str:
        return self._text[self._at :] if self.finished else ""

    def feed(self, text: str) -> list[CallPiece]:
        self._text += text
        pieces: list[CallPiece] = []
        while not self.broken and not self._closed and self._step(pieces):
            pass
        return pieces

    def _step(self, pieces: list[CallPiece]) -> bool:
        raise NotImplementedError

    def _break(self) -> bool:
        self.broken = True
        return False

    def _send(self, text: str, pieces: list[CallPiece]) -> None:
        """More of the latest call's arguments."""
        if not text:
            return
        index = len(self.calls) - 1
        self.calls[index].arguments += text
        if pieces and not pieces[-1].opened and pieces[-1].index == index:
            pieces[-1].text += text
        else:
            pieces.append(CallPiece(index, False, text))


@dataclass
class XmlCallStream(_MarkupReading):
    """One call in a family's markup (`XmlCalls`: Qwen3-Coder's `<function=name>` and `<parameter=key>`, GLM's
    `name<arg_key>…`, MiniMax-M2's `<invoke name=…>`) read as it is written: its arguments are sent as the JSON
    object the reader makes of the call read whole (`tool_formats`), a string parameter's text piece by piece (what
    may still be its closing, or blank space the reader leaves out, held back), any other value (JSON) once it is
    whole. Stops reading (`broken`) at anything such a call does not hold."""

    form: XmlCalls
    functions: Mapping[str, Any]  # the offered functions by name: which parameters are text
    calls: list[StreamedCall] = field(default_factory=list)
    broken: bool = False
    _text: str = ""
    _at: int = 0
    _parameters: int = 0  # read so far
    _key: str | None = None  # the parameter whose value is being read
    _marked_json: bool | None = None  # whether its opening marked it JSON (None: the family marks no kind)
    _sent: int = 0  # of a text value, the characters sent (or, at its start, left out)
    _begun: bool = False  # whether a text value's first character that the reader keeps was sent
    _closed: bool = False
    _ended: bool = False  # closed by the reply's end (`close`)

    def __post_init__(self) -> None:
        opened, closed = self.form.parameter
        value = rf"\s*{re.escape(self.form.value[0])}" if self.form.value[0] else ""
        # (the opening's end, which may mark the value's kind: group 2 is the JSON one's)
        ended = re.escape(closed)
        if self.form.json_opening_end is not None:
            ended = rf"(?:{ended}|({re.escape(self.form.json_opening_end)}))"
        self._parameter = re.compile(rf"{re.escape(opened)}({_XML_KEY}){ended}{value}")
        so_far = prefix_pattern(closed)
        if self.form.json_opening_end is not None:
            so_far = rf"(?:{so_far}|{prefix_pattern(self.form.json_opening_end)})"
        if self.form.value[0]:
            so_far = rf"(?:{so_far}|{re.escape(closed)}\s*{prefix_pattern(self.form.value[0])})"
        self._parameter_so_far = re.compile(rf"{prefix_pattern(opened)}|{re.escape(opened)}[^\s<>\"]*{so_far}")

    def close(self) -> list[CallPiece]:
        """At the reply's end: a call whose markup has no closing of its own (GLM's) ends with the reply, unless it
        was cut inside a value (its arguments then stay cut, as any call cut short); not `finished`, which only the
        wrapping's closing tells."""
        if self.form.end or self._closed or self.broken or self._key is not None or self._ended:
            return []
        pieces: list[CallPiece] = []
        if not self.calls:  # the name, whole at the reply's very end
            at = _non_blank(self._text, self._at)
            if self._text[at:] not in self.functions:
                return []
            self._at = len(self._text)
            self.calls.append(StreamedCall(self._text[at:]))
            pieces.append(CallPiece(0, True, self._text[at:]))
            self._send("{", pieces)
        self._ended = True
        self._send("}", pieces)
        return pieces

    def _step(self, pieces: list[CallPiece]) -> bool:
        """Reads on: the function's opening, a parameter's opening, its value, or the closing; False when more text
        is needed."""
        if self._key is not None:
            return self._value(pieces)
        text = self._text
        at = _non_blank(text, self._at)
        if not self.calls:
            return self._opening(at, pieces)
        end = self.form.end
        if end and text.startswith(end, at):
            self._at, self._closed = at + len(end), True
            self._send("}", pieces)
            return False
        opening = self._parameter.match(text, at)
        if opening is None or (self.form.trim == "line" and opening.end() == len(text)):
            if opening is None and not self._parameter_so_far.fullmatch(text, at):
                if end and not end.startswith(text[at:]):
                    self.broken = True
                elif not end and at < len(text):  # what follows ends the call (the wrapping's closing): not its
                    self._at, self._closed = at, True
                    self._send("}", pieces)
            return False  # (a line break after the opening is not the value's)
        self._key, self._sent, self._begun = opening[1], 0, False
        self._marked_json = opening.group(2) is not None if self.form.json_opening_end is not None else None
        self._at = opening.end() + (self.form.trim == "line" and text[opening.end()] == "\n")
        separator = ", " if self._parameters else ""
        quote = '"' if self._as_text else ""
        self._send(f"{separator}{json.dumps(self._key, ensure_ascii=False)}: {quote}", pieces)
        return True

    def _opening(self, at: int, pieces: list[CallPiece]) -> bool:
        """The function's opening, which names an offered function (where the name is not closed by markup, what
        follows it ends it)."""
        text, (before, after) = self._text, self.form.function
        waiting = False
        for name in self.functions:
            opened = before + name + after
            end = at + len(opened)
            if text.startswith(opened, at):
                if after or (end < len(text) and (text[end].isspace() or text[end] == "<")):
                    self._at = end
                    self.calls.append(StreamedCall(name))
                    pieces.append(CallPiece(0, True, name))
                    self._send("{", pieces)
                    return True
                waiting |= end == len(text)
            waiting |= opened.startswith(text[at:])
        self.broken = not waiting
        return False

    @property
    def _as_text(self) -> bool:
        """Whether the value being read is text: as its opening marks it, else as its parameter's schema types it."""
        assert self._key is not None
        if self._marked_json is not None:
            return not self._marked_json
        return is_text_parameter(self.calls[0].name, self._key, self.functions)

    def _value(self, pieces: list[CallPiece]) -> bool:
        """A parameter's value, which ends at its closing tag (blank space at its ends left out as the reader does)."""
        assert self._key is not None
        text, start, closing = self._text, self._at, self.form.value[1]
        end = text.find(closing, start)
        if end < 0:
            if self._as_text:  # what cannot yet be the closing's beginning, or left out at the value's end
                safe = len(text) - partial_suffix(text, closing)
                if self.form.trim == "line":
                    safe = min(safe, len(text) - partial_suffix(text, "\n" + closing))
                elif self.form.trim == "strip":
                    safe = start + len(text[start:safe].rstrip())
                self._send_text(text[start + self._sent : safe], pieces)
            return False
        if self._as_text:
            self._send_text(self._trimmed_end(text[start + self._sent : end]), pieces)
            self._send('"', pieces)
        else:
            value = self._trimmed_end(text[start:end])
            value = value.lstrip() if self.form.trim == "strip" else value
            written = parameter_value(value, self.calls[0].name, self._key, self.functions)
            self._send(json.dumps(written, ensure_ascii=False), pieces)
        self._at, self._key = end + len(closing), None
        self._parameters += 1
        return True

    def _trimmed_end(self, raw: str) -> str:
        """A value's last raw characters without what the reader leaves out at its end."""
        if self.form.trim == "line":
            return raw[:-1] if raw.endswith("\n") else raw
        return raw.rstrip() if self.form.trim == "strip" else raw

    def _send_text(self, raw: str, pieces: list[CallPiece]) -> None:
        """Sends the next raw characters of a text value (after blank space at its start, where the reader strips
        it)."""
        self._sent += len(raw)
        if self.form.trim == "strip" and not self._begun:
            raw = raw.lstrip()
        self._begun |= bool(raw)
        self._send(json.dumps(raw, ensure_ascii=False)[1:-1], pieces)


@dataclass
class GemmaCallStream(_MarkupReading):
    """One Gemma 4 call's arguments, `{key:value,…}` in Gemma's syntax as its call grammar writes them (keys bare, a
    string between `<|"|>` quotes, numbers and literals as JSON's, no blank space), read as they are written: sent
    as the JSON the reader makes of them whole, a string piece by piece (what may still be its closing quote held
    back), any other scalar once whole. Stops reading (`broken`) at anything else."""

    name: str
    calls: list[StreamedCall] = field(default_factory=list)
    broken: bool = False
    _text: str = ""
    _at: int = 0
    _stack: list[str] = field(default_factory=list)  # the objects and lists open, by their opening character
    _expecting: str = "value"  # "key", "value" or "comma" (after a value: a comma or a closing)
    _string_sent: int | None = None  # of a string being read, the characters sent
    _closed: bool = False

    def _step(self, pieces: list[CallPiece]) -> bool:
        text, at = self._text, self._at
        if self._string_sent is not None:
            return self._string(pieces)
        if at >= len(text):
            return False
        char = text[at]
        if not self.calls:  # the arguments' object opens the call
            if char != "{":
                return self._break()
            self.calls.append(StreamedCall(self.name))
            pieces.append(CallPiece(0, True, self.name))
            return self._open(char, pieces)
        if self._expecting == "comma" or (self._expecting == "key" and char == "}"):
            return self._after_value(char, pieces)
        if self._expecting == "key":
            colon = text.find(":", at)
            if colon < 0:
                return False
            self._at, self._expecting = colon + 1, "value"
            self._send(json.dumps(text[at:colon], ensure_ascii=False) + ": ", pieces)
            return True
        if char in "{[":
            return self._open(char, pieces)
        if char == "]" and self._stack[-1] == "[":  # an empty list
            return self._after_value(char, pieces)
        if text.startswith(GEMMA_QUOTE, at):
            self._at, self._string_sent = at + len(GEMMA_QUOTE), 0
            self._send('"', pieces)
            return True
        if GEMMA_QUOTE.startswith(text[at:]):
            return False  # (may still be a string's opening quote)
        end = _ENDS_A_GEMMA_SCALAR.search(text, at)
        if end is None:
            return False  # `12` may still be `123`
        try:
            value = json.loads(text[at : end.start()])
        except ValueError:
            return self._break()
        if isinstance(value, float) and not math.isfinite(value):
            return self._break()  # (the reader keeps it as text)
        self._at, self._expecting = end.start(), "comma"
        self._send(json.dumps(value, ensure_ascii=False), pieces)
        return True

    def _string(self, pieces: list[CallPiece]) -> bool:
        """A string's text up to its closing quote, sent as it comes."""
        assert self._string_sent is not None
        text, start = self._text, self._at
        end = text.find(GEMMA_QUOTE, start + self._string_sent)
        safe = end if end >= 0 else max(len(text) - partial_suffix(text, GEMMA_QUOTE), start + self._string_sent)
        self._send(json.dumps(text[start + self._string_sent : safe], ensure_ascii=False)[1:-1], pieces)
        self._string_sent = max(self._string_sent, safe - start)
        if end < 0:
            return False
        self._at, self._string_sent, self._expecting = end + len(GEMMA_QUOTE), None, "comma"
        self._send('"', pieces)
        return True

    def _open(self, char: str, pieces: list[CallPiece]) -> bool:
        self._stack.append(char)
        self._at += 1
        self._expecting = "key" if char == "{" else "value"
        self._send(char, pieces)
        return True

    def _after_value(self, char: str, pieces: list[CallPiece]) -> bool:
        """A comma (then the next key or item), or the closing of the object or list the value was in."""
        if char == ",":
            self._at += 1
            self._expecting = "key" if self._stack[-1] == "{" else "value"
            self._send(", ", pieces)
            return True
        if char != {"{": "}", "[": "]"}[self._stack[-1]]:
            return self._break()
        self._stack.pop()
        self._at += 1
        self._expecting = "comma"
        self._send(char, pieces)
        self._closed = not self._stack
        return True


@dataclass
class PythonicCallStream(_MarkupReading):
    """A pythonic list of calls, `[name(key=value, …), …]` as its call grammar writes them, read as it is written:
    each call opens once its name is whole (at its `(`), each keyword's value is sent once whole, as the JSON the
    reader (Python's `ast`) makes of it. Stops reading (`broken`) at anything else."""

    calls: list[StreamedCall] = field(default_factory=list)
    broken: bool = False
    _text: str = ""
    _at: int = 0
    # Where the reading is: before the list ("list"), before a call ("call"), a keyword ("key"), its value ("value"),
    # after a value ("argued") or after a call ("called")
    _state: str = "list"
    _arguments: int = 0  # of the call being read, those sent
    _closed: bool = False

    def _step(self, pieces: list[CallPiece]) -> bool:
        text = self._text
        at = self._at = _non_blank(text, self._at)
        if at >= len(text):
            return False
        char = text[at]
        if self._state == "list":
            if char != "[":
                return self._break()
            self._at, self._state = at + 1, "call"
            return True
        if self._state in ("call", "key"):
            return self._name(pieces)
        if self._state == "value":
            return self._value(pieces)
        if char == ",":
            self._at, self._state = at + 1, "key" if self._state == "argued" else "call"
            return True
        if self._state == "argued" and char == ")":
            self._at, self._state = at + 1, "called"
            self._send("}", pieces)
            return True
        if self._state == "called" and char == "]":
            self._at, self._closed = at + 1, True
            return False
        return self._break()

    def _name(self, pieces: list[CallPiece]) -> bool:
        """A call's name, whole at its `(`; a keyword's, whole at its `=` (or the call's end, after no keyword)."""
        text, at = self._text, self._at
        if self._state == "key" and not self._arguments and text[at] == ")":
            self._at, self._state = at + 1, "called"
            self._send("}", pieces)
            return True
        named = _PYTHON_NAME.match(text, at)
        assert named is not None  # (it may be empty)
        if named.end() == len(text):
            return False  # may go on
        ending = "(" if self._state == "call" else "="
        if not named.group(0) or text[named.end()] != ending:
            return self._break()
        self._at = named.end() + 1
        if self._state == "call":
            self.calls.append(StreamedCall(named.group(0)))
            pieces.append(CallPiece(len(self.calls) - 1, True, named.group(0)))
            self._arguments = 0
            self._send("{", pieces)
        else:
            separator = ", " if self._arguments else ""
            self._send(f"{separator}{json.dumps(named.group(0), ensure_ascii=False)}: ", pieces)
        self._state = "key" if self._state == "call" else "value"
        return True

    def _value(self, pieces: list[CallPiece]) -> bool:
        """A keyword's value, once it is whole: at a comma or the call's closing outside its brackets and strings."""
        end = _python_value_end(self._text, self._at)
        if end is None:
            return False
        try:
            value = python_value(self._text[self._at : end])
        except ValueError:
            return self._break()
        self._send(json.dumps(value, ensure_ascii=False), pieces)
        self._at, self._state = end, "argued"
        self._arguments += 1
        return True


_PYTHON_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|")


def _python_value_end(text: str, start: int) -> int | None:
    """Where a keyword's value that starts at `start` ends (a comma or a closing parenthesis outside its brackets
    and strings), None while it may go on."""
    depth, position = 0, start
    while position < len(text):
        char = text[position]
        if char == '"':
            position += 1
            while position < len(text) and text[position] != '"':
                position += 2 if text[position] == "\\" else 1
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            if depth == 0:
                return position if char == ")" else None
            depth -= 1
        elif char == "," and depth == 0:
            return position
        position += 1
    return None


def _closing_so_far(text: str, closing: str | None) -> bool:
    """Whether `text` is a wrapping's closing, or may still become it."""
    return closing is not None and (text.startswith(closing) or closing.startswith(text))


def _named_opening(form: NamedCalls, wrapping: str) -> re.Pattern[str]:
    """A named call's opening, to its arguments: the wrapping's opening (before every call, as Mistral's, or before
    the first only, where each call has its own opening), the call's head, its name, perhaps an id, then the
    arguments' marker."""
    opened = re.escape(wrapping) if form.each is None else rf"(?:{re.escape(wrapping)}[ \n]*)?{re.escape(form.each)}"
    call_id = rf"(?:{re.escape(form.call_id)}[{form.id_characters}]*)?" if form.call_id is not None else ""
    return re.compile(rf"{opened}{re.escape(form.prefix)}(?P<name>[A-Za-z0-9_-]+){call_id}{re.escape(form.arguments)}")


def _non_blank(text: str, at: int) -> int:
    while at < len(text) and text[at] in _WHITESPACE:
        at += 1
    return at


class OpenedCalls:
    """An unforced reply's calls read from where they open, which the engine says (`SampledToken.call_opened`):
    from there its call grammar holds the reply (`SamplingParams.call_grammar`), so each call's arguments are sent
    as they are written, as a forced reply's are. The text before the opening stays the reply's content. The
    family's calls open with `opening` (in `tags`, or bare; `named`: each call its name between markers, then its
    arguments, `NamedCalls`; `xml`: markup of the family's own in the tags, `XmlCallStream`, which reads the
    parameters as `functions` types them; `harmony`: a message addressed to a function, its header naming it, its
    body the arguments; `gemma4`: `call:name` in the tags, the arguments in Gemma's syntax, `GemmaCallStream`;
    `pythonic`: a pythonic list in the tags, `PythonicCallStream`; `keyed_by_name`: each call `{name: arguments}`);
    with `fenced`, a call may open in a ```json fence, and with `bare`, as a bare call."""

    def __init__(
        self,
        opening: str | None,
        tags: tuple[str, str | None] | None,
        *,
        fenced: bool = False,
        bare: bool = False,
        named: NamedCalls | None = None,
        xml: XmlCalls | None = None,
        harmony: bool = False,
        gemma4: bool = False,
        pythonic: bool = False,
        keyed_by_name: bool = False,
        functions: Mapping[str, Any] | None = None,
    ) -> None:
        # Each way a call opens, its wrapping (the opening's pattern and the closing: a named call's opening runs to
        # its arguments, its closing is the call's own) and whether its calls are XML
        self._openings: list[tuple[re.Pattern[str], tuple[re.Pattern[str], str | None] | None, XmlCalls | None]] = []
        self._section_closing: str | None = None  # named calls' wrapping's closing, after the last call's own
        if opening is not None:
            wrapping = (re.compile(re.escape(tags[0])), tags[1]) if tags is not None else None
            if tags is not None and named is not None:
                wrapping = (_named_opening(named, tags[0]), (named.arguments_end + named.closing).strip())
                self._section_closing = tags[1] if named.each is not None else None
            if harmony:
                wrapping = (re.compile(HARMONY_CALL_HEADER), HARMONY_CALL_END)
            if gemma4 and tags is not None:
                head = re.escape(tags[0] + GEMMA_CALL_HEAD)
                wrapping = (re.compile(rf"{head}(?P<name>[A-Za-z0-9_-]+)(?=\{{)"), tags[1])
            self._openings.append((re.compile(opening), wrapping, xml if tags is not None else None))
        # the family's own calls' wrapping
        self._own = self._openings[0][1] if opening is not None else None
        if fenced:
            self._openings.append((re.compile(FENCED_CALL_OPENING), (re.compile(FENCE_OPEN), FENCE_CLOSE), None))
        if bare:
            self._openings.append((re.compile(BARE_CALL_OPENING), None, None))
        self._functions = functions or {}
        self._wrapping: tuple[re.Pattern[str], str | None] | None = None  # the calls' that opened
        self._xml: XmlCalls | None = None  # the markup of the calls that opened, where it is the family's own
        self.start: int | None = None  # where in the reply's text the calls begin
        self._text = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._decoded = 0  # characters of the tokens seen so far (the text may lag behind: a stop string's hold)
        self._opened_by = -1  # where the token that opened a call ends in the text
        self._rest = ""  # the text after `start` that no call has read yet
        self._done: list[StreamedCall] = []  # the calls of earlier call objects
        self._current: CallStream | XmlCallStream | GemmaCallStream | PythonicCallStream | None = None
        self._gemma4 = gemma4
        self._pythonic = pythonic
        self._keyed_by_name = keyed_by_name

    @classmethod
    def held_by(cls, grammar: CallGrammar, functions: Mapping[str, Any] | None) -> OpenedCalls:
        """The reading of the calls that `grammar` holds (the engine's, `SamplingParams.call_grammar`)."""
        return cls(
            grammar.opening,
            grammar.tags,
            fenced=grammar.fenced,
            bare=grammar.bare,
            named=grammar.named,
            xml=grammar.xml,
            harmony=grammar.harmony,
            gemma4=grammar.gemma4,
            pythonic=grammar.pythonic,
            keyed_by_name=grammar.keyed_by_name,
            functions=functions,
        )

    @property
    def calls(self) -> list[StreamedCall]:
        return self._done + (self._current.calls if self._current is not None else [])

    @property
    def came_to_nothing(self) -> bool:
        """Whether calls opened but none was named (the reply was cut short): what follows the opening is text."""
        return self.start is not None and not self.calls

    @property
    def after_start(self) -> str:
        return self._text[self.start :] if self.start is not None else ""

    def answer_part(self, text: str, fed: int) -> str:
        """Of the reply's next `text`, which follows `fed` characters, what comes before the calls."""
        return text if self.start is None else text[: max(0, self.start - fed)]

    @property
    def _named(self) -> bool:
        """Whether the calls that opened are named ones (their opening holds the name)."""
        return self._wrapping is not None and "name" in self._wrapping[0].groupindex

    @property
    def finished(self) -> bool:
        """Whether the calls read so far are whole, and nothing after them is the start of more (a further call's
        opening, a separator, a closing tag cut short: the reply was cut there)."""
        # between calls: the last one closed
        whole = bool(self._done) if self._current is None else self._current.finished
        return whole and not self._rest.strip()

    def feed(self, text: str, tokens: Sequence[SampledToken]) -> list[CallPiece]:
        """Takes the reply's next text and the tokens it came from. The pieces to send now."""
        for token in tokens:
            self._decoded += len(self._decoder.decode(token.piece))
            if token.call_opened:
                self._opened_by = self._decoded
        self._text += text
        if self.start is None:
            if self._opened_by < 0 or len(self._text) < self._opened_by:
                return []
            # The opening the engine saw: the last one to end within the token that opened the call
            window = max(0, self._opened_by - _OPENING_WINDOW)
            found = [
                (match, wrapping, xml)
                for pattern, wrapping, xml in self._openings
                for match in pattern.finditer(self._text, window, self._opened_by)
            ]
            if not found:  # the text disagrees with the engine's: the calls are read whole at the end
                self._opened_by = -1
                return []
            # (a fence's opening ends where the bare call's inside it does: the longer is the one)
            match, self._wrapping, self._xml = max(found, key=lambda opened: (opened[0].end(), -opened[0].start()))
            self.start = match.start()
            text = self._text[self.start :]
        self._rest += text
        pieces: list[CallPiece] = []
        while self._read(pieces):
            pass
        return pieces

    def close(self) -> list[CallPiece]:
        """At the reply's end: the pieces that end a call whose markup has no closing of its own (`XmlCallStream`)."""
        if not isinstance(self._current, XmlCallStream):
            return []
        base = len(self._done)
        return [CallPiece(piece.index + base, piece.opened, piece.text) for piece in self._current.close()]

    def _read(self, pieces: list[CallPiece]) -> bool:
        """Reads on; False when more text is needed."""
        current = self._current
        if current is not None and not current.finished:
            base = len(self._done)
            fed, self._rest = self._rest, ""
            for piece in current.feed(fed):
                pieces.append(CallPiece(piece.index + base, piece.opened, piece.text))
            if not current.finished:
                return False
            self._rest = current.unread
            return True
        rest = self._rest.lstrip()
        if current is not None and not self._named and self._xml is None:  # after a value: perhaps another, listed
            after = _LISTED.sub("", rest, count=1)
            if after[:1] in ("{", "["):
                self._done.extend(current.calls)
                self._current, self._rest = CallStream(leaves_rest=True, by_name=self._keyed_by_name), after
                return True
        if self._wrapping is not None:
            opened, closed = self._wrapping
            if current is not None:  # after a call: its closing tag, then perhaps the next call's opening
                if self._xml is not None and self._xml.several and rest and not _closing_so_far(rest, closed):
                    self._done.extend(current.calls)  # another call in the same wrapping
                    self._current, self._rest = XmlCallStream(self._xml, self._functions), rest
                    return True
                if closed is None or not rest.startswith(closed):
                    return False
                rest = rest[len(closed) :].lstrip()
                self._done.extend(current.calls)
                self._current = current = None
            section_closing = self._section_closing if self._named else None  # (a fence's calls have none)
            if section_closing is not None and rest.startswith(section_closing):  # no further call
                self._rest = rest[len(section_closing) :]
                return False
            opening = opened.match(rest)
            if opening is None:  # not yet whole (or not there: the reply ends after the calls)
                self._rest = rest
                return False
            rest = rest[opening.end() :]
            if self._named:  # a named call: its arguments follow
                if self._gemma4:
                    self._current, self._rest = GemmaCallStream(opening["name"]), rest
                else:
                    self._current, self._rest = CallStream(leaves_rest=True, named=opening["name"]), rest
                return True
            if self._xml is not None:
                self._current, self._rest = XmlCallStream(self._xml, self._functions), rest
                return True
            if self._pythonic and self._wrapping is self._own:  # (a fenced call, were one held, would be JSON)
                self._current, self._rest = PythonicCallStream(), rest
                return True
        elif current is not None:
            return False  # a bare call is the reply's last
        keyed = self._keyed_by_name and self._wrapping is self._own
        self._current, self._rest = CallStream(leaves_rest=True, by_name=keyed), rest
        return True
