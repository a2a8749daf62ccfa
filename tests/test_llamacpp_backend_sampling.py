"""`backend_sampling`: tokens drawn inside llama.cpp's graph (issue 12: on a GPU, the draws one after another in Python
left the card waiting). The answers follow the request as a draw in this process does: greedy alike, logit_bias and
ignore_eos honoured, a seed repeating alone, beside other streams and after its sequence moved to another slot, and
requests that need logits here (logprobs) drawn here beside them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from oasis.engines.llamacpp import native
from oasis.engines.llamacpp.engine import LlamaCppEngine
from oasis.engines.text import SamplingParams
from oasis.settings import ModelSpec
from tests.conftest import forget_caches, smollm

# Long enough (past _SHARE_MIN tokens) that requests sharing it copy the cache of the one that reads it.
PROMPT = (
    "You are a poet who writes about the weather, the coast and the people who live by it. Your lines are short, "
    "plain and concrete; you never explain them. Write a line about the sea."
)


@pytest.fixture
def graph_draws(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every token the engine read from llama.cpp's graph: a draw done in Python would answer alike, so the tests
    count where each token came from."""
    lib = native.lib()
    real = lib.llama_get_sampled_token_ith
    drawn: list[int] = []

    def read(context: Any, row: int) -> int:
        token = int(real(context, row))
        drawn.append(token)
        return token

    monkeypatch.setattr(lib, "llama_get_sampled_token_ith", read)
    return drawn


async def _engine(**options: Any) -> LlamaCppEngine:
    engine = LlamaCppEngine(ModelSpec(**smollm(context_length=256, **options)))
    await engine.start()
    return engine


async def _answer(engine: LlamaCppEngine, text: str = PROMPT, **params: Any) -> list[int]:
    prompt = engine.tokenize(text, add_special=True)
    return [token.token async for token in engine.generate(prompt, SamplingParams(**params))]


async def test_greedy_answers_alike_and_logit_bias_and_ignore_eos_are_honoured(graph_draws: list[int]) -> None:
    here = await _engine(parallel=1)
    try:
        expected = await _answer(here, max_tokens=24, temperature=0.0)
    finally:
        await here.close()
    engine = await _engine(parallel=1, backend_sampling=True)
    try:
        greedy = await _answer(engine, max_tokens=24, temperature=0.0)
        banned = await _answer(engine, max_tokens=24, temperature=0.0, logit_bias={greedy[0]: -100.0})
        # Temperature 0.5 for 60 tokens of a short answer: the end token would come without ignore_eos.
        endless = await _answer(engine, max_tokens=60, temperature=0.5, seed=1, ignore_eos=True)
        assert engine._running == [] and all(not slot.busy for slot in engine._slots)
    finally:
        await engine.close()
    assert greedy == expected
    assert banned[0] != greedy[0]
    assert graph_draws == greedy + banned + endless  # the first engine drew in Python, this one in the graph
    assert len(endless) == 60 and not set(endless) & engine._eog_set


async def test_a_seed_repeats_alone_and_beside_streams_drawn_here_and_in_the_graph(graph_draws: list[int]) -> None:
    engine = await _engine(parallel=6, backend_sampling=True)
    seeds = (5, 6, 8)
    try:
        # Temperature 1.5: the first token varies from seed to seed, so a borrowed one would show.
        alone = [await _answer(engine, max_tokens=24, temperature=1.5, seed=seed, ignore_eos=True) for seed in seeds]
        prompt = engine.tokenize(PROMPT, add_special=True)
        with_logprobs = engine.generate(
            prompt, SamplingParams(max_tokens=24, temperature=0.9, seed=7, top_logprobs=2, ignore_eos=True)
        )

        async def logprobs() -> list[Any]:
            return [token async for token in with_logprobs]

        # The same prompt together: one reads it, the others copy its cache (each draws from its own logits).
        *together, greedy_one, greedy_two, scored = await asyncio.gather(
            *(_answer(engine, max_tokens=24, temperature=1.5, seed=seed, ignore_eos=True) for seed in seeds),
            _answer(engine, max_tokens=24, temperature=0.0),
            _answer(engine, max_tokens=24, temperature=0.0),
            logprobs(),
        )
    finally:
        await engine.close()
    assert together == alone and all(len(answer) == 24 for answer in alone)
    assert len({answer[0] for answer in alone}) > 1  # the seeds begin differently
    assert greedy_one == greedy_two
    assert len(scored) == 24 and all(token.logprob is not None and len(token.top_logprobs) == 2 for token in scored)
    # Every token but the logprobs request's came from the graph.
    assert len(graph_draws) == 2 * sum(map(len, alone)) + len(greedy_one) + len(greedy_two)


async def test_a_sequence_moved_to_another_slot_keeps_drawing_its_seeded_answer(graph_draws: list[int]) -> None:
    """Four slots taken, two short answers finish and leave holes; the story's sequence moves next to the other
    (its chain, random state and all, goes with it) and its answer does not change."""
    engine = await _engine(parallel=4, backend_sampling=True)
    story = "Tell a long story about a lighthouse."
    sampling = {"max_tokens": 80, "temperature": 0.9, "seed": 11, "ignore_eos": True}
    try:
        alone = await _answer(engine, story, **sampling)
        forget_caches(engine)  # else the slot holding the story would be taken again, and nothing would move
        first = asyncio.create_task(_answer(engine, "Describe the sea at night.", max_tokens=80, ignore_eos=True))
        short_one = asyncio.create_task(_answer(engine, "Say hi.", max_tokens=3, ignore_eos=True))
        moved = asyncio.create_task(_answer(engine, story, **sampling))
        short_two = asyncio.create_task(_answer(engine, "Name a colour.", max_tokens=3, ignore_eos=True))
        story_prompt = engine.tokenize(story, add_special=True)
        slots_seen: set[int] = set()  # the slots the story's sequence decoded in
        while not moved.done():
            slots_seen |= {
                sequence.slot.seq_id
                for sequence in list(engine._running)
                if sequence.slot is not None and sequence.prompt == story_prompt
            }
            await asyncio.sleep(0.002)
        assert len(await short_one) == 3 and len(await short_two) == 3
        assert len(await first) == 80
    finally:
        await engine.close()
    assert await moved == alone
    assert len(slots_seen) == 2  # it moved
    assert len(graph_draws) == 80 + 80 + 80 + 3 + 3


async def test_a_configured_model_draws_in_the_graph_through_the_sdk(
    start_oasis: Callable[..., Any], graph_draws: list[int]
) -> None:
    harness = await start_oasis(engine_factories=None, models=[smollm(parallel=2, backend_sampling=True)])
    client = harness.sdk()
    messages = [{"role": "user", "content": "Name three colours."}]

    async def reply(**fields: Any) -> Any:
        return await client.chat.completions.create(model="smollm2-135m-instruct", messages=messages, **fields)

    first, again, with_logprobs = await asyncio.gather(
        reply(max_tokens=20, temperature=1.0, seed=3),
        reply(max_tokens=20, temperature=1.0, seed=3),
        reply(max_tokens=5, temperature=1.0, seed=3, logprobs=True, top_logprobs=2),  # drawn here
    )
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.usage.completion_tokens > 0
    assert len(with_logprobs.choices[0].logprobs.content[0].top_logprobs) == 2
    assert len(graph_draws) == first.usage.completion_tokens + again.usage.completion_tokens


async def test_a_chain_the_device_cannot_draw_is_drawn_here_from_what_the_graph_left(
    monkeypatch: pytest.MonkeyPatch, graph_draws: list[int]
) -> None:
    """A device that lacks an operation of a chain's member: llama.cpp runs the members before it in the graph and
    reads no token. Here every chain starts with a member that has no graph form (typical sampling keeping all but
    1e-7 of the mass: no token likelier than that is cut, and at p=1 llama.cpp would put a member that runs in the
    graph), so llama.cpp draws nothing and the engine draws each token from the logits the graph left."""
    lib = native.lib()
    chain_init = lib.llama_sampler_chain_init

    def with_a_member_left_here(params: Any) -> Any:
        chain = chain_init(params)
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_typical(0.9999999, 1))
        return chain

    here = await _engine(parallel=1)
    try:
        expected = await _answer(here, max_tokens=24, temperature=0.0)
    finally:
        await here.close()
    monkeypatch.setattr(lib, "llama_sampler_chain_init", with_a_member_left_here)
    engine = await _engine(parallel=2, backend_sampling=True)
    sampling = {"max_tokens": 40, "temperature": 1.2, "seed": 9, "ignore_eos": True}
    try:
        greedy = await _answer(engine, max_tokens=24, temperature=0.0)
        seeded, again = await asyncio.gather(_answer(engine, **sampling), _answer(engine, **sampling))
        assert engine._running == [] and all(not slot.busy for slot in engine._slots)
    finally:
        await engine.close()
    assert greedy == expected
    assert seeded == again and len(seeded) == 40 and not set(seeded) & engine._eog_set
    assert graph_draws == [-1] * (len(greedy) + 40 + 40)  # the graph drew none of them
