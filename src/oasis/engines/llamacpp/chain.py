"""A draw through a llama.cpp sampler chain that cannot abort the process.

llama_sampler_sample applies the chain to every token's logit, then tells each sampler which token was drawn. When
the chain leaves no token possible (a JSON grammar that is complete, so that only the end-of-generation token may
follow, which `ignore_eos` bans), the draw still picks one, and the grammar, told of a token it forbids, throws a
C++ exception that nothing can catch through ctypes: std::terminate ended the whole server. Here the two steps run
apart, and a token that was not possible (its logit -inf, or NaN from broken logits) is not passed on: the caller
ends the sequence instead.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

from oasis.engines.llamacpp import native

# struct llama_token_data { llama_token id; float logit; float p; }
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class ChainDraw:
    """One candidate array, reused by every draw of the thread that owns it."""

    def __init__(self, vocabulary: int) -> None:
        self._vocabulary = vocabulary
        self._ids = np.arange(vocabulary, dtype=np.int32)
        self._candidates = np.zeros(vocabulary, dtype=_TOKEN_DATA)
        self._data = ctypes.cast(self._candidates.ctypes.data, ctypes.POINTER(native.llama_token_data))
        self._array: Any = native.llama_token_data_array()

    def draw(self, chain: Any, logits: np.ndarray) -> int | None:
        """The token the chain draws from `logits`, accepted by its samplers; None when no token was possible."""
        candidates = self._candidates
        candidates["id"] = self._ids  # samplers reorder the array in place (top_p sorts it)
        candidates["logit"] = logits
        candidates["p"] = 0.0
        array = self._array
        array.data = self._data  # a sampler may have pointed it at a buffer of its own
        array.size = self._vocabulary
        array.selected = -1
        array.sorted = False
        lib = native.lib()
        lib.llama_sampler_apply(chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            return None
        chosen = array.data[array.selected]
        if not chosen.logit > -math.inf:
            return None
        token = int(chosen.id)
        lib.llama_sampler_accept(chain, token)
        return token
