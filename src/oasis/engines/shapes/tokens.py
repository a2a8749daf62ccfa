"""Captions to token ids for the default image model's text encoder: lower-cased words looked up in the model's
own vocabulary; any other word is `<unk>`. An empty prompt is the single `<null>` token the model learned as "no
caption" (what classifier-free guidance and variations sample against)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

SPECIALS = ("<pad>", "<unk>", "<null>")
PAD, UNK, NULL = 0, 1, 2


class Tokenizer:
    def __init__(self, words: Sequence[str], max_length: int) -> None:
        self.words = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.index = {w: i for i, w in enumerate(self.words)}
        self.max_length = max_length

    def ids(self, text: str) -> list[int]:
        found = [self.index.get(w, UNK) for w in re.findall(r"[a-z]+", text.lower())]
        return found[: self.max_length] or [NULL]

    def batch(self, texts: Sequence[str]) -> np.ndarray:
        """(B, L) ids padded with 0 to the longest."""
        rows = [self.ids(t) for t in texts]
        out = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int64)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out
