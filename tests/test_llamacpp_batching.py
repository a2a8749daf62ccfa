"""One graph computation per decoding step: llama.cpp (without a unified KV cache) splits a batch into ubatches
whose sequence ids rise one by one in batch order, so the engine must put running sequences into each step in
slot order, whatever order they were admitted in (issue 12)."""

from __future__ import annotations

import asyncio
import ctypes
from typing import Any

import pytest

from oasis.engines.llamacpp import native
from oasis.engines.llamacpp.engine import _SETTLE_STEPS, LlamaCppEngine
from oasis.engines.text import SamplingParams
from oasis.settings import ModelSpec
from tests.conftest import forget_caches, smollm


@pytest.fixture
def ubatch_counter(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Counts, for each llama_decode call, its tokens and the ubatches llama.cpp split it into (from the debug
    lines LLAMA_BATCH_DEBUG makes it log)."""
    monkeypatch.setenv("LLAMA_BATCH_DEBUG", "1")  # read when a context is made
    lib = native.lib()
    added = [0]

    @lib.llama_log_callback
    def count(level: int, text: bytes, _user_data: Any) -> None:
        if b"added ubatch" in text:
            added[0] += 1

    lib.llama_log_set(count, ctypes.c_void_p(0))
    calls: list[tuple[int, int]] = []
    real_decode = lib.llama_decode

    def decode(context: Any, batch: Any) -> int:
        before = added[0]
        status = real_decode(context, batch)
        calls.append((batch.n_tokens, added[0] - before))
        return int(status)

    monkeypatch.setattr(lib, "llama_decode", decode)
    yield calls
    lib.llama_log_set(native._forward_log, ctypes.c_void_p(0))


async def _generate(engine: LlamaCppEngine, text: str, max_tokens: int) -> int:
    prompt = engine.tokenize(text, add_special=True, parse_special=False)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.8, seed=7, ignore_eos=True)
    return sum([1 async for _ in engine.generate(prompt, params)])


async def test_sequences_admitted_out_of_slot_order_decode_in_one_ubatch(ubatch_counter: Any) -> None:
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=2, context_length=256)))
    await engine.start()
    try:
        short = asyncio.create_task(_generate(engine, "Say hi.", 3))  # admitted first: slot 0
        long_one = asyncio.create_task(_generate(engine, "Tell a long story about a lighthouse.", 60))  # slot 1
        assert await short == 3
        # Slot 0 is free again; this one takes it, admitted after the sequence in slot 1.
        late = asyncio.create_task(_generate(engine, "Count to ten.", 30))
        assert await long_one == 60 and await late == 30
    finally:
        await engine.close()
    two_token_steps = [ubatches for tokens, ubatches in ubatch_counter if tokens == 2]
    assert two_token_steps, ubatch_counter
    assert all(ubatches == 1 for ubatches in two_token_steps), ubatch_counter


async def _greedy_text(engine: LlamaCppEngine, text: str, max_tokens: int) -> str:
    prompt = engine.tokenize(text, add_special=True, parse_special=False)
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    return engine.detokenize([token.token async for token in engine.generate(prompt, params)])


async def test_sequences_left_apart_by_finished_ones_move_together_and_answer_the_same(ubatch_counter: Any) -> None:
    """Slots 0-3 taken, the short answers in 1 and 3 finish: a few steps later (in case new requests fill the
    holes) the sequence in slot 2 moves into slot 1 (a copy of its cache), so the two that remain decode in one
    graph computation, and its answer does not change."""
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=4, context_length=256)))
    await engine.start()
    story = "Tell a long story about a lighthouse."
    try:
        alone = await _greedy_text(engine, story, 80)
        forget_caches(engine)  # else the slot holding the story would be taken again, and nothing would move
        ubatch_counter.clear()
        first = asyncio.create_task(_generate(engine, "Describe the sea at night.", 80))
        short_one = asyncio.create_task(_generate(engine, "Say hi.", 3))
        moved = asyncio.create_task(_greedy_text(engine, story, 80))
        short_two = asyncio.create_task(_generate(engine, "Name a colour.", 3))
        assert await short_one == 3 and await short_two == 3
        assert await first == 80
        assert await moved == alone
        memory = native.lib().llama_get_memory(engine._context)
        for slot in engine._slots:  # every slot's bookkeeping matches what llama.cpp holds
            assert native.lib().llama_memory_seq_pos_max(memory, slot.seq_id) == len(slot.cached) - 1
    finally:
        await engine.close()
    two_token_steps = [ubatches for tokens, ubatches in ubatch_counter if tokens == 2]
    assert len(two_token_steps) > 50, ubatch_counter
    assert sum(ubatches > 1 for ubatches in two_token_steps) <= _SETTLE_STEPS, ubatch_counter


async def test_a_short_prompt_sent_again_reads_only_its_last_token_beside_empty_slots() -> None:
    """A slot that holds the whole of a prompt sent again is taken rather than an empty one, however few tokens
    that is (eight short prompts at once read again take eight times a step's time; llama-server takes the slot
    with the longest common prefix too). One that shares only a few tokens with every cache still takes an empty
    slot, so that the other conversations keep theirs."""
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=4, context_length=256)))
    await engine.start()
    story = "Tell a long story about a lighthouse."
    try:
        await _generate(engine, story, 20)
        await _generate(engine, "Name a colour.", 5)  # shares a token or two: an empty slot, the story's kept
        decoded, cached = engine.prompt_tokens_decoded, engine.prompt_tokens_cached
        await _generate(engine, story, 20)
        prompt = engine.tokenize(story, add_special=True, parse_special=False)
        assert len(prompt) < 32  # shorter than a copy of a cache is worth: only the slot holding it serves
        assert (engine.prompt_tokens_decoded - decoded, engine.prompt_tokens_cached - cached) == (1, len(prompt) - 1)
        held = sorted(len(slot.cached) for slot in engine._slots)
        assert held[:2] == [0, 0] and held[2] < held[3]  # the colour's slot, the story's; two left empty
    finally:
        await engine.close()
