"""Splits text into overlapping windows of tokens, as file_search's static chunking strategy describes.

Tokens are OpenAI's cl100k_base, so `max_chunk_size_tokens` means what it means at OpenAI.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from oasis.errors import invalid_request
from oasis.services.embeddings import openai_tokens

DEFAULT_SIZE = 800
DEFAULT_OVERLAP = 400


@dataclass(frozen=True)
class Chunking:
    type: str  # "auto" | "static": what the client asked for, shown back on the object
    max_chunk_size_tokens: int = DEFAULT_SIZE
    chunk_overlap_tokens: int = DEFAULT_OVERLAP

    def to_wire(self) -> dict[str, object]:
        static = {
            "max_chunk_size_tokens": self.max_chunk_size_tokens,
            "chunk_overlap_tokens": self.chunk_overlap_tokens,
        }
        # A file's strategy always reads back as static with the sizes used, as OpenAI shows it.
        return {"type": "static", "static": static}


def chunking_from_request(raw: dict[str, object] | None, param: str = "chunking_strategy") -> Chunking:
    if raw is None or raw.get("type") == "auto":
        return Chunking(type="auto")
    if raw.get("type") != "static":
        raise invalid_request(f"'{param}.type' must be 'auto' or 'static'.", param=f"{param}.type")
    static = raw.get("static")
    if not isinstance(static, dict):
        raise invalid_request(f"'{param}.static' is required for the static strategy.", param=f"{param}.static")
    size = static.get("max_chunk_size_tokens")
    overlap = static.get("chunk_overlap_tokens")
    if not isinstance(size, int) or isinstance(size, bool) or not 100 <= size <= 4096:
        raise invalid_request(
            "'max_chunk_size_tokens' must be an integer from 100 to 4096.",
            param=f"{param}.static.max_chunk_size_tokens",
        )
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap <= size // 2:
        raise invalid_request(
            "'chunk_overlap_tokens' must be an integer from 0 to half of max_chunk_size_tokens.",
            param=f"{param}.static.chunk_overlap_tokens",
        )
    return Chunking(type="static", max_chunk_size_tokens=size, chunk_overlap_tokens=overlap)


def split(text: str, size: int, overlap: int) -> list[str]:
    """Windows of `size` tokens, each starting `size - overlap` tokens after the last, over the whole text."""
    return list(split_stream([text], size, overlap))


# A space between two letters: cl100k starts a token at such a space whatever precedes it, so the text can be cut
# there and tokenized in two parts with the same tokens as whole.
_SAFE_CUT = re.compile(r"(?<=[^\W\d_]) (?=[^\W\d_])")
_CUT_WINDOW = 4096  # characters searched (from the end) for a safe cut; text without one is cut where it ends


def _safe_cut(text: str) -> int:
    tail_start = max(0, len(text) - _CUT_WINDOW)
    cut = len(text)
    for found in _SAFE_CUT.finditer(text, tail_start):
        cut = found.start()
    return cut


def split_stream(pieces: Iterable[str], size: int, overlap: int) -> Iterator[str]:
    """Windows of `size` tokens, each starting `size - overlap` tokens after the last, over text that arrives in
    pieces, holding no more than two pieces and one window. Deterministic for the same pieces, so a resumed
    ingestion job finds the same chunks at the same positions. Pieces are joined at spaces between words, where
    the tokens are those of the whole text, and the last piece is tokenized with what is left: one piece gives
    exactly what `split` gives."""
    encoding = openai_tokens.cl100k()
    step = max(1, size - overlap)
    tokens: list[int] = []
    carried = ""

    def windows() -> Iterator[str]:
        # A window is not the last while more tokens follow it; the last one is emitted at the end. The windows
        # walk an offset, and the passed tokens go once at the end: deleting each step's from the front made a
        # one-piece document (a DOCX's text) quadratic in its length.
        start = 0
        while len(tokens) - start > size:
            if piece := encoding.decode(tokens[start : start + size]).strip():
                yield piece
            start += step
        del tokens[:start]

    held: str | None = None  # the newest piece: tokenized once another follows, the last one whole
    for piece in pieces:
        if held is not None:
            text = carried + held
            cut = _safe_cut(text)
            carried = text[cut:]
            tokens.extend(encoding.encode(text[:cut], disallowed_special=()))
            yield from windows()
        held = piece
    tokens.extend(encoding.encode(carried + (held or ""), disallowed_special=()))
    yield from windows()
    # The last window: what is left (at most `size` tokens).
    if tokens and (piece := encoding.decode(tokens[:size]).strip()):
        yield piece
