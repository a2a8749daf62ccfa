"""A JSON file's text for vector-store search: json.dumps' layout, streamed past a size, errors as JSONTextError."""

from __future__ import annotations

import io
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from oasis.services.vector_stores import json_text
from oasis.services.vector_stores.json_text import JSONTextError, pretty_json
from oasis.services.vector_stores.text_extraction import InvalidFile, extract_text, text_pieces


def _pieces(text: str, size: int) -> Iterator[str]:
    return (text[start : start + size] for start in range(0, len(text), size))


class _Counted:
    """The text in pieces, counting how much of it was read."""

    def __init__(self, text: str) -> None:
        self.read = 0
        self._pieces = _pieces(text, 1 << 16)

    def __iter__(self) -> _Counted:
        return self

    def __next__(self) -> str:
        piece = next(self._pieces)
        self.read += len(piece)
        return piece


def _expected(raw: str) -> str:
    return json.dumps(json.loads(raw), indent=1, ensure_ascii=False)


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 4 or roll < 0.4:
        scalars = [0, -0.0, 1.5, 1e300, -12, 10**30, 'q"b\\c\n\u00e9\U0001f600', "", True, False, None, float("inf")]
        return rng.choice([*scalars, "x" * 40])
    if roll < 0.7:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{rng.randint(0, 99)}\t": _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_streamed_layout_is_json_dumps_layout_wherever_the_pieces_break() -> None:
    rng = random.Random(7)
    for _ in range(400):
        raw = json.dumps(_random_value(rng), indent=rng.choice([None, 0, 2, "\t"]), ensure_ascii=rng.random() < 0.5)
        for size in (1, 3, 7, 1000):
            assert "".join(pretty_json(_pieces(raw, size))) == _expected(raw), (raw, size)


@pytest.mark.parametrize(
    "raw",
    ["1.50", "-0", "1e400", "-1E-2", "NaN", "-Infinity", '"\\u00e9\\/"', '"\\ud83d\\ude00"', " [ ] ", "{ }", "1.5e3"],
)
def test_scalars_are_written_as_json_dumps_writes_them(raw: str) -> None:
    assert "".join(pretty_json(_pieces(raw, 1))) == _expected(raw)


@pytest.mark.parametrize(
    "raw",
    ["", " ", "{", "[1,]", '{"a"}', '{"a":1,}', "01", "1 2", '"\\q"', '"a\x01"', "tru", "[1 2]", "{1:2}", "-", "1.",
     ".5", '"abc', "]", '{"a":1]', "[1}", "1" * 5000],
)  # fmt: skip
def test_what_json_loads_refuses_is_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        json.loads(raw)
    for size in (1, 2, 100):
        with pytest.raises(JSONTextError):
            "".join(pretty_json(_pieces(raw, size)))
    with pytest.raises(JSONTextError):
        "".join(json_text.json_text(iter([raw])))


def test_a_large_file_is_streamed_in_bounded_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_text, "WHOLE_PARSE_LIMIT", 1 << 20)
    rows = [{"id": number, "name": f"row {number}", "tags": ["a", "b"]} for number in range(100_000)]
    raw = json.dumps(rows)
    counted = _Counted(raw)
    out = json_text.json_text(counted)
    first = next(out)
    assert counted.read < len(raw) // 2  # the first text came long before the file was read
    rest = list(out)
    assert max(len(piece) for piece in [first, *rest]) < 2 * (1 << 20)
    assert first + "".join(rest) == _expected(raw)


def test_whitespace_between_tokens_is_not_kept_waiting() -> None:
    formatter = json_text._Formatter(_pieces("[" + " " * 3_000_000 + "1]", 1 << 16))
    assert "".join(formatter.run()) == "[\n 1\n]"
    assert len(formatter._buffer) <= 1 << 16


@pytest.mark.parametrize(
    "raw",
    [
        '["a\x01' + "b" * 4_000_000 + '"]',  # a control character in a string
        "[1" + "-" * 4_000_000 + "]",  # a number followed by what no fraction or exponent starts with
    ],
)
def test_an_invalid_token_fails_without_reading_the_rest(raw: str) -> None:
    counted = _Counted(raw)
    with pytest.raises(JSONTextError, match=r"at character [12]$"):
        "".join(pretty_json(counted))
    assert counted.read <= 1 << 16


def test_nesting_past_the_bound_is_refused_not_indented_without_end() -> None:
    deep = "[" * (json_text.MAX_DEPTH + 1) + "]" * (json_text.MAX_DEPTH + 1)
    with pytest.raises(JSONTextError, match="Nested more than"):
        "".join(pretty_json(iter([deep])))
    # Parsed whole, too deep for Python's recursion: refused as invalid, not an error the job retries.
    with pytest.raises(InvalidFile, match="not valid JSON"):
        extract_text("deep.json", ("[" * 100_000 + "]" * 100_000).encode())


def test_a_lone_surrogate_escape_stays_an_escape_that_can_be_stored() -> None:
    raw = b'{"note": "\\ud800 alone", "pair": "\\ud83d\\ude00"}'
    text = extract_text("odd.json", raw)
    text.encode("utf-8")  # a lone surrogate would raise here, and the chunk could not be stored
    assert '"\\ud800 alone"' in text and "\U0001f600" in text
    streamed = "".join(pretty_json(iter([raw.decode()])))
    assert streamed == text


def test_json_files_are_read_through_text_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_text, "WHOLE_PARSE_LIMIT", 1 << 10)
    raw = json.dumps({"items": [{"n": number} for number in range(2000)]}).encode()
    assert "".join(text_pieces("data.json", io.BytesIO(raw))) == _expected(raw.decode())
    with pytest.raises(InvalidFile, match="not valid JSON: Expecting ',' delimiter"):
        "".join(text_pieces("bad.json", io.BytesIO(raw[:-1] + b" 3}")))


def test_text_of_brackets_and_keys_alone_is_yielded_in_bounded_pieces() -> None:
    raw = "[" + "[]," * 1_000_000 + '{"k": {}}]'
    pieces = list(pretty_json(_pieces(raw, 1 << 16)))
    assert max(len(piece) for piece in pieces) < 2 * (1 << 20) and len(pieces) > 2
    assert "".join(pieces) == _expected(raw)
