"""Drawing a token from the whole distribution at a temperature, in numpy.

OpenAI's sampling has no hidden top-k: the token is drawn from every token's probability. llama.cpp's `dist`
sampler does that one float at a time (exponentiate, sum, walk the cumulative sum), after copying the logits
into a candidate array and dividing each by the temperature: about 0.45 ms a token over SmolLM2's 49k
vocabulary on this project's 2-core machine, 6-7% of a decoding step. The same draw in numpy's SIMD loops, with
the sums taken over blocks first and the running sum only inside the one block the draw falls in, takes about
0.05 ms when its caches are warm.

Right after a decode they are not (the decode streams the model's weights through them), and then what a numpy
call costs besides its arithmetic dominates: every Python-level wrapper (`np.max`, `ndarray.sum`, `np.cumsum`,
a slice) is code and data fetched from memory. So the draw calls the ufuncs' own reductions, keeps its views,
and draws its uniform numbers 64 at a time (the same numbers, in the same order, as one call each): 0.13-0.15
instead of 0.19-0.22 ms a token in the engine (bench/RESULTS.md, 2026-12-02).

Used when nothing else reshapes the distribution (no top_p below 1, penalties or grammar: those keep
llama.cpp's sampler chain).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

_BLOCK = 1024
_UNIFORMS = 64  # uniform numbers drawn per call to the generator

# The ufuncs' own methods, past numpy's Python-level wrappers (typed loosely: numpy's stubs overload them narrowly).
_largest: Any = np.maximum.reduce
_sum: Any = np.add.reduce
_running_sum: Any = np.add.accumulate


class FullDistributionSampler:
    def __init__(
        self,
        vocabulary: int,
        temperature: float,
        logit_bias: Mapping[int, float],
        banned: Iterable[int] = (),
        seed: int | None = None,
    ) -> None:
        self._scale = np.float32(1.0 / temperature)
        biases = {**logit_bias, **dict.fromkeys(banned, -np.inf)}
        self._bias_tokens = np.fromiter(biases, dtype=np.intp, count=len(biases))
        self._bias_values = np.fromiter(biases.values(), dtype=np.float32, count=len(biases)) * self._scale
        # OpenAI's seeds are any 64-bit integer; numpy's generator takes none below 0: the same bits, unsigned.
        self._random = np.random.default_rng(None if seed is None else seed & 0xFFFF_FFFF_FFFF_FFFF)
        self._uniforms: list[float] = []
        padded = -(-vocabulary // _BLOCK) * _BLOCK
        weights = np.zeros(padded, dtype=np.float32)  # the tail past the vocabulary stays 0
        self._weights = weights[:vocabulary]
        self._blocks = weights.reshape(-1, _BLOCK)

    def sample(self, logits: np.ndarray) -> int:
        weights = self._weights
        np.multiply(logits, self._scale, out=weights)
        if self._bias_tokens.size:
            weights[self._bias_tokens] += self._bias_values
        largest = _largest(weights)
        if largest == -np.inf:  # every token banned: the likeliest one
            return int(np.argmax(logits))
        np.subtract(weights, largest, out=weights)
        np.exp(weights, out=weights)
        # Each block's sum in float32 (pairwise, so within a few ulps), their running sum in float64.
        block_sums = _sum(self._blocks, axis=1)
        cumulative = _running_sum(block_sums, dtype=np.float64)
        total = cumulative[-1]
        if not total > 0:  # the logits broken (NaN, infinite): the likeliest one
            return int(np.argmax(logits))
        if not self._uniforms:
            self._uniforms = self._random.random(_UNIFORMS).tolist()[::-1]
        target = self._uniforms.pop() * total
        last = len(cumulative) - 1
        block = min(int(cumulative.searchsorted(target, side="right")), last)
        below = cumulative[block - 1] if block else 0.0
        inside = _running_sum(self._blocks[block], dtype=np.float64)
        # Where the target lies within the block, as a share of the block's sum, placed on the block's own running
        # sum: the two sums differ in their last bits, and this way no draw falls past the block's end.
        share = min((target - below) / block_sums[block], 1.0) if block_sums[block] > 0 else 1.0
        offset = min(int(inside.searchsorted(share * inside[-1], side="right")), _BLOCK - 1)
        token = block * _BLOCK + offset
        vocabulary = len(weights)
        if token >= vocabulary or weights[token] == 0:  # rounding at an edge: step back to a real one
            candidates = np.flatnonzero(weights[: min(token + 1, vocabulary)])
            token = int(candidates[-1]) if candidates.size else int(np.argmax(logits))
        return token
