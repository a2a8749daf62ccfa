"""Sampling at a temperature from the whole distribution, drawn in numpy (issue 12: llama.cpp's sampler chain
spent 6-7% of a step on it): the draw follows the softmax, honours logit_bias and bans, and a seed repeats."""

from __future__ import annotations

import json

import numpy as np

from oasis.engines.llamacpp.sampling import FullDistributionSampler
from oasis.engines.text import SamplingParams
from tests.conftest import smollm

VOCABULARY = 3000  # past two blocks, so that the draw crosses block edges


def _logits() -> np.ndarray:
    logits = np.random.default_rng(3).standard_normal(VOCABULARY).astype(np.float32) * 2
    logits[7], logits[2500] = 6.0, 5.5
    return logits


def test_draws_follow_the_softmax_at_the_temperature_with_biases_and_bans() -> None:
    logits = _logits()
    sampler = FullDistributionSampler(VOCABULARY, 0.7, {11: 3.0, 2048: -2.0}, banned=[7], seed=1)
    draws = 100_000
    frequencies = np.bincount([sampler.sample(logits) for _ in range(draws)], minlength=VOCABULARY) / draws
    expected = logits.astype(np.float64)
    expected[11] += 3.0
    expected[2048] -= 2.0
    expected /= 0.7
    expected[7] = -np.inf
    expected = np.exp(expected - expected.max())
    expected /= expected.sum()
    assert frequencies[7] == 0
    # each frequency within 4 standard errors of its probability
    assert np.all(np.abs(frequencies - expected) <= 4 * np.sqrt(expected * (1 - expected) / draws) + 1e-4)


def test_a_seed_repeats_its_draws_and_none_varies() -> None:
    logits = _logits()

    def draws(seed: int | None) -> list[int]:
        sampler = FullDistributionSampler(VOCABULARY, 1.0, {}, seed=seed)
        return [sampler.sample(logits) for _ in range(50)]

    assert draws(42) == draws(42)
    assert draws(None) != draws(None)


def test_a_seeded_draw_is_the_inverse_of_the_cumulative_distribution_at_each_uniform_number() -> None:
    """Past the 64 uniforms drawn at once, each draw is the token where u * total falls in the running sum of
    the probabilities, u being the generator's next number: the same answer as one call of random() per draw."""
    logits = _logits()
    sampler = FullDistributionSampler(VOCABULARY, 0.8, {5: 1.5}, banned=[7], seed=11)
    scaled = logits.astype(np.float64) / 0.8
    scaled[5] += 1.5 / 0.8
    scaled[7] = -np.inf
    cumulative = np.cumsum(np.exp(scaled - scaled.max()))
    uniforms = np.random.default_rng(11)
    expected = [int(np.searchsorted(cumulative, uniforms.random() * cumulative[-1], side="right")) for _ in range(200)]
    assert [sampler.sample(logits) for _ in range(200)] == expected


def test_no_draw_lands_past_the_vocabulary_or_on_a_banned_token_in_a_partial_last_block() -> None:
    vocabulary = 1025  # the last block holds one token and 1023 zeros of padding
    logits = np.full(vocabulary, -10.0, dtype=np.float32)
    logits[1024], logits[1023] = 8.0, 4.0
    draws = [
        FullDistributionSampler(vocabulary, 1.0, {}, banned=[1024], seed=seed).sample(logits) for seed in range(300)
    ]
    assert all(0 <= token < 1024 for token in draws)
    assert draws.count(1023) > 280  # the likeliest token left (p 0.999)
    unbanned = [FullDistributionSampler(vocabulary, 1.0, {}, seed=seed).sample(logits) for seed in range(300)]
    assert unbanned.count(1024) > 280


def test_with_every_token_banned_the_draw_still_answers_a_token() -> None:
    logits = _logits()
    sampler = FullDistributionSampler(VOCABULARY, 1.0, {}, banned=range(VOCABULARY), seed=1)
    assert sampler.sample(logits) == int(np.argmax(logits))


async def test_the_engine_repeats_a_seeded_answer_at_temperature() -> None:
    from oasis.engines.llamacpp.engine import LlamaCppEngine
    from oasis.settings import ModelSpec

    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=2, context_length=256)))
    await engine.start()
    try:
        prompt = engine.tokenize("Write a line about the sea.", add_special=True)
        params = SamplingParams(max_tokens=24, temperature=0.9, seed=5, logit_bias={0: -100.0})
        first = [t.token async for t in engine.generate(prompt, params)]
        again = [t.token async for t in engine.generate(prompt, params)]
        other = [t.token async for t in engine.generate(prompt, SamplingParams(max_tokens=24, temperature=0.9, seed=6))]
    finally:
        await engine.close()
    assert first == again and len(first) == 24
    assert other != first


async def test_a_grammar_asked_about_the_drawn_token_alone_keeps_the_constrained_distribution() -> None:
    """The JSON grammar is asked about the one token drawn and applied to the whole vocabulary only when it refuses
    it (llama-server's way; 4 ms a token less here): the draws must still follow the softmax over what the grammar
    allows, and never give what it forbids, even when that is the likeliest token."""
    from oasis.engines.llamacpp import native
    from oasis.engines.llamacpp.chain import ChainDraw
    from oasis.engines.llamacpp.engine import LlamaCppEngine
    from oasis.settings import ModelSpec

    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256)))
    await engine.start()
    try:
        [brace] = engine.tokenize("{", add_special=False)
        [brace_quote] = engine.tokenize('{"', add_special=False)
        [word] = engine.tokenize("hello", add_special=False)
        vocabulary = engine._n_vocab
        logits = np.full(vocabulary, -20.0, dtype=np.float32)
        logits[brace], logits[brace_quote], logits[word] = 2.0, 1.0, 2.5  # the forbidden word is the likeliest
        sampler = engine._make_sampler(SamplingParams(max_tokens=8, temperature=1.0, json_schema={}, seed=3))
        assert not sampler.grammar_first
        draw, lib, draws = ChainDraw(vocabulary), native.lib(), 1500
        tokens = []
        for _ in range(draws):
            tokens.append(draw.draw(sampler, logits))
            lib.llama_sampler_reset(sampler.grammar)  # back to the document's start; the draw's generator goes on
        sampler.free()
    finally:
        await engine.close()
    assert word not in tokens and None not in tokens
    share = tokens.count(brace) / draws
    expected = np.exp(2.0) / (np.exp(2.0) + np.exp(1.0))  # what -20 leaves to the other allowed tokens is ~1e-9
    assert tokens.count(brace) + tokens.count(brace_quote) == draws
    assert abs(share - expected) <= 4 * np.sqrt(expected * (1 - expected) / draws), share


def test_the_grammar_cache_is_bounded_by_what_it_holds_not_by_count() -> None:
    """Keyed by whole schemas (each as long as a request body may be), a cache bounded by count could hold
    gigabytes: this one holds a bounded number of characters, and converts a schema once while it is held."""
    from oasis.engines.llamacpp.native import GrammarCache

    def schema(description: str) -> str:
        return json.dumps({"type": "object", "properties": {"a": {"type": "string", "description": description}}})

    cache = GrammarCache(max_chars=20_000)
    for _ in range(3):
        assert "root" in cache(schema("short"))
    assert cache.conversions == 1
    huge = schema("x" * 30_000)
    for _ in range(2):
        assert "root" in cache(huge)
    assert cache.conversions == 3  # too large to hold: converted each time, and the short one stays
    for n in range(40):
        cache(schema(f"schema number {n} " * 20))
    assert cache._chars <= cache.max_chars
