"""The default image model draws what it is asked (issue 17): captions whose colour/shape/position combination
training never showed (scenes.held_out), each sampled with several seeds, read back off the pixels by the scene
detector (the colour is there, centred in the named region, as many blobs as asked for).

Measured with the shipped weights (bench/RESULTS.md): colour and place right in every sample but one, the count as
well in 84% of them. The bars: the issue's target for all three at once (80%), a few samples under the measurement
(other machines' floating point may draw a handful differently); colour and place a little under theirs."""

from __future__ import annotations

import os
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from oasis.engines.shapes import scenes
from oasis.engines.shapes.engine import ShapesModel

SEEDS = 4


@pytest.fixture(scope="module")
def model() -> ShapesModel:
    return ShapesModel()


def held_out_pass_rate(model: ShapesModel, seeds: int = SEEDS) -> tuple[float, float, list[str]]:
    """(share with colour, place and count right; share with colour and place right; what went wrong)."""
    prompts = scenes.held_out_prompts()

    def findings(index: int) -> list[tuple[str, scenes.Finding]]:
        prompt, group = prompts[index]
        images = model.sample(prompt, seeds, np.random.default_rng(index), steps=20, guidance=3.0)
        return [(prompt, scenes.check(image, group)) for image in images]

    # A prompt per core, each on one BLAS thread: this network's matrices are too small for BLAS to split well
    # (two prompts at once take the time of one on two BLAS threads). Each prompt keeps its own generator.
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        checked = [pair for pairs in pool.map(findings, range(len(prompts))) for pair in pairs]
    failures = [f"{prompt!r}: {finding.reason}" for prompt, finding in checked if not finding.ok]
    samples = len(prompts) * seeds
    passed = sum(finding.ok for _, finding in checked)
    placed = sum(finding.placed for _, finding in checked)
    return passed / samples, placed / samples, failures


@pytest.mark.slow
def test_held_out_prompts_are_drawn_in_the_right_colour_and_place(model: ShapesModel) -> None:
    rate, placed, failures = held_out_pass_rate(model)
    assert placed >= 0.95, f"{placed:.0%} in the right colour and place; misses: {failures[:20]}"
    assert rate >= 0.8, f"{rate:.0%} wholly right (count too); misses: {failures[:20]}"


def test_the_held_out_combinations_never_occur_in_training() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        assert not any(scenes.held_out(group) for group in scenes.random_scene(rng).groups)
    prompts = scenes.held_out_prompts()
    assert len(prompts) >= 40
    assert {group.position for _, group in prompts} == {None, *scenes.POSITIONS}


def test_the_detector_reads_rendered_scenes_and_rejects_wrong_ones() -> None:
    rng = random.Random(3)
    group = scenes.Group("red", "circle", 2, None, "left")
    image = scenes.render(scenes.Scene((group,)), 32, rng)
    assert scenes.check(image, group).ok
    assert not scenes.check(image, scenes.Group("red", "circle", 2, None, "right")).ok
    assert not scenes.check(image, scenes.Group("red", "circle", 3, None, "left")).ok
    assert not scenes.check(image, scenes.Group("blue", "circle", 2, None, "left")).ok


def test_unknown_words_do_not_break_a_prompt(model: ShapesModel) -> None:
    group = scenes.Group("blue", "square", 1, None, "right")
    images = model.sample(
        "a gorgeous blue square on the right, trending on artstation",
        4,
        np.random.default_rng(0),
        steps=20,
        guidance=3.0,
    )
    assert sum(scenes.check(image, group).placed for image in images) >= 3
