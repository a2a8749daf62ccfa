"""Citations in an answer written from file_search results. A small model rarely writes citation markers itself, so
they are made from what the answer drew on: as the answer streams, each finished sentence that shares enough of
its content words with a retrieved passage gets that passage's marker (`【n:m†source】`) after it, and a
`file_citation` annotation pointing at the marker."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from oasis.services.assistants.file_search import marker
from oasis.services.vector_stores.relevance import query_stems, stems

# A sentence cites a passage when they share at least this many content words, and this share of its own.
MIN_SHARED_WORDS = 2
MIN_SHARED_SHARE = 0.4
# The longest quote an annotation carries.
QUOTE_CHARS = 300
_SENTENCE_ENDS = ".!?"
_PASSAGE_SENTENCES = re.compile(r"[^.!?\n]+[.!?]?")


@dataclass(frozen=True)
class Source:
    """One retrieved passage: the file it came from and its marker numbers."""

    search: int
    result: int
    file_id: str
    text: str

    @property
    def marker(self) -> str:
        return marker(self.search, self.result)


def sources_of(calls: list[dict[str, Any]]) -> list[Source]:
    """The passages of the given file_search calls (as run steps store them)."""
    return [
        Source(call.get("_number", 0), index, result["file_id"], "\n".join(p["text"] for p in result["content"]))
        for call in calls
        for index, result in enumerate(call["file_search"]["results"])
    ]


@dataclass(frozen=True)
class Segment:
    """A piece of the answer's text, or (with `source`) a marker to insert there."""

    text: str
    source: Source | None = None
    quote: str = ""  # with `source`: the passage's sentence closest to the one cited


class Citer:
    def __init__(self, sources: list[Source]) -> None:
        self._sources = [(source, stems(source.text)) for source in sources]
        self._sentence = ""

    def feed(self, piece: str) -> list[Segment]:
        """The piece split where sentences end, with the marker of each finished sentence's source."""
        segments: list[Segment] = []
        start = 0
        for position, character in enumerate(piece):
            previous = piece[position - 1] if position > 0 else (self._sentence[-1:] or " ")
            ends = (character.isspace() and previous in _SENTENCE_ENDS) or character == "\n"
            if not ends:
                continue
            self._sentence += piece[start:position]
            if piece[start:position]:
                segments.append(Segment(piece[start:position]))
            start = position
            cited = self._cite(self._sentence)
            if cited is not None:
                segments.append(cited)
            self._sentence = ""
        if piece[start:]:
            segments.append(Segment(piece[start:]))
            self._sentence += piece[start:]
        return segments

    def end(self) -> list[Segment]:
        """The marker of the last sentence, when the answer ends without a break after it."""
        cited = self._cite(self._sentence)
        self._sentence = ""
        return [cited] if cited is not None else []

    def _cite(self, sentence: str) -> Segment | None:
        words = query_stems(sentence)
        if len(words) < MIN_SHARED_WORDS:
            return None
        best: tuple[int, Source] | None = None
        for source, source_stems in self._sources:
            shared = len(words & source_stems)
            if best is None or shared > best[0]:  # the earlier (better ranked) source wins a tie
                best = (shared, source)
        if best is None or best[0] < MIN_SHARED_WORDS or best[0] < MIN_SHARED_SHARE * len(words):
            return None
        return Segment(best[1].marker, best[1], _quote(best[1], words))


def _quote(source: Source, words: set[str]) -> str:
    """The sentence of the passage that shares the most of the citing sentence's `words`."""
    candidates = [part.strip() for part in _PASSAGE_SENTENCES.findall(source.text) if part.strip()]
    if not candidates:
        return source.text[:QUOTE_CHARS]
    return max(candidates, key=lambda part: len(words & stems(part)))[:QUOTE_CHARS]
