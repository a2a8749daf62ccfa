"""Chat `logprobs.content`: the log probabilities of the tokens the content came from, as OpenAI gives them, and
not of the tokens that wrote a call's markup or the model's thinking (those are not content).

Each sampled token is placed in the reply's text by its bytes; once the reply reader has settled a part of the
text (content or not), the tokens wholly inside that part go out, those overlapping the content with it.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any

from oasis.engines.text import SampledToken, TextEngine
from oasis.services.chat.reply import ReplyReader
from oasis.services.chat.text_models import token_text


def logprob_entries(engine: TextEngine, tokens: list[SampledToken]) -> dict[str, Any]:
    content = []
    for sampled in tokens:
        text, piece = token_text(engine, sampled)
        content.append(
            {
                "token": text,
                "logprob": sampled.logprob,
                "bytes": list(piece),
                "top_logprobs": [
                    {"token": t, "logprob": alt.logprob, "bytes": list(b)}
                    for alt in sampled.top_logprobs
                    for t, b in [token_text(engine, alt.token)]
                ],
            }
        )
    return {"content": content}


@dataclass
class ContentTokens:
    """One choice's tokens, placed in its text, waiting until the reader has settled where they fall."""

    _decoder: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    _position: int = 0
    _waiting: list[tuple[SampledToken, int, int]] = field(default_factory=list)

    def add(self, tokens: list[SampledToken]) -> None:
        for sampled in tokens:
            start = self._position
            self._position += len(self._decoder.decode(sampled.piece))
            self._waiting.append((sampled, start, self._position))

    def settled(self, reader: ReplyReader, final: bool = False) -> list[SampledToken]:
        """The waiting tokens that now belong to the content; the settled ones that do not are dropped."""
        placed = reader.content_spans()
        if placed is None:  # the reader cannot tell: every token, as they come
            released, self._waiting = [token for token, _, _ in self._waiting], []
            return released
        spans, decided = placed
        if final:
            decided = max(decided, self._position)
        released, waiting = [], []
        for token, start, end in self._waiting:
            if end > decided or (end == start and start >= decided and not final):
                waiting.append((token, start, end))
            elif any(start < b and (end > a or (end == start and a <= start)) for a, b in spans):
                released.append(token)
        self._waiting = waiting
        return released
