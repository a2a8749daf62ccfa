"""Draws through a llama.cpp sampler chain: one that cannot abort the process, and a JSON grammar asked about the
drawn token first.

llama_sampler_sample applies the chain to every token's logit, then tells each sampler which token was drawn. When
the chain leaves no token possible (a JSON grammar that is complete, so that only the end-of-generation token may
follow, which `ignore_eos` bans), the draw still picks one, and the grammar, told of a token it forbids, throws a
C++ exception that nothing can catch through ctypes: std::terminate ended the whole server. Here the steps run
apart, and a token that was not possible (its logit -inf, or NaN from broken logits) is not passed on: the caller
ends the sequence instead.

A grammar applied to every token of the vocabulary costs about 4 ms a token over SmolLM2's 49k (more than a
decoding step of that model). llama-server draws without it first and asks the grammar about the one token drawn;
only when the grammar refuses it is the draw made again with the grammar applied to all (common/sampling.cpp).
That is exact for a draw from the softmax and for greedy: a token t the grammar allows comes out with probability
p(t) + (1 - V) p(t) / V = p(t) / V, V being what the allowed tokens weigh together, which is the constrained
distribution. With top_p it is not (the nucleus would be taken before the grammar removed tokens from it), so there
the grammar goes first, as before.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import numpy as np

from oasis.engines.llamacpp import native

# struct llama_token_data { llama_token id; float logit; float p; }
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class SamplerChain:
    """A llama.cpp sampler chain (biases, penalties, top_p, temperature, the draw) and, kept apart from it, the
    grammar every token must follow. Owns both: `free` releases them."""

    def __init__(
        self, chain: Any, grammar: Any = None, *, grammar_first: bool = False, banned: frozenset[int] = frozenset()
    ) -> None:
        self.chain = chain
        self.grammar = grammar
        self.grammar_first = grammar_first
        self.banned = banned  # tokens the chain sets to -inf (the end tokens, with ignore_eos)

    def free(self) -> None:
        lib = native.lib()
        lib.llama_sampler_free(self.chain)
        if self.grammar is not None:
            lib.llama_sampler_free(self.grammar)


class ChainDraw:
    """The candidate arrays, reused by every draw of the thread that owns them."""

    def __init__(self, vocabulary: int) -> None:
        self._vocabulary = vocabulary
        self._ids = np.arange(vocabulary, dtype=np.int32)
        self._candidates = np.zeros(vocabulary, dtype=_TOKEN_DATA)
        self._data = ctypes.cast(self._candidates.ctypes.data, ctypes.POINTER(native.llama_token_data))
        self._array: Any = native.llama_token_data_array()
        self._one: Any = native.llama_token_data()
        self._one_array: Any = native.llama_token_data_array()

    def draw(self, sampler: SamplerChain, logits: np.ndarray) -> int | None:
        """The token the sampler draws from `logits`, accepted by its samplers; None when no token was possible."""
        grammar = sampler.grammar
        token = self._drawn(sampler, logits, with_grammar=grammar is not None and sampler.grammar_first)
        if token is not None and grammar is not None and not sampler.grammar_first and not self._allows(grammar, token):
            token = self._drawn(sampler, logits, with_grammar=True)
        if token is None:
            return None
        lib = native.lib()
        lib.llama_sampler_accept(sampler.chain, token)
        if grammar is not None:
            lib.llama_sampler_accept(grammar, token)
        return token

    def _drawn(self, sampler: SamplerChain, logits: np.ndarray, *, with_grammar: bool) -> int | None:
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
        if with_grammar:
            lib.llama_sampler_apply(sampler.grammar, ctypes.byref(array))
            if not self._any_possible(sampler.banned):
                return None  # the draw over nothing would be left to an assert that release builds leave out
        lib.llama_sampler_apply(sampler.chain, ctypes.byref(array))
        if not 0 <= array.selected < array.size:
            return None
        chosen = array.data[array.selected]
        return int(chosen.id) if chosen.logit > -math.inf else None

    def _any_possible(self, banned: frozenset[int]) -> bool:
        """Whether a token the grammar left possible is not banned by the chain (the grammar only sets logits to
        -inf; it neither moves nor drops candidates)."""
        allowed = np.flatnonzero(self._candidates["logit"] > -np.inf)
        return len(allowed) > len(banned) or any(int(token) not in banned for token in allowed)

    def _allows(self, grammar: Any, token: int) -> bool:
        one, array = self._one, self._one_array
        one.id, one.logit, one.p = token, 1.0, 0.0
        array.data = ctypes.pointer(one)
        array.size, array.selected, array.sorted = 1, -1, False
        native.lib().llama_sampler_apply(grammar, ctypes.byref(array))
        return bool(one.logit > -math.inf)
