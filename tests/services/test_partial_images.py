"""Which steps of a drawing send its partial images: spread evenly, never after the last step (the final image
goes then), fewer where a model draws in fewer steps than the previews asked for."""

from __future__ import annotations

import pytest

from oasis.engines.image import Previews


@pytest.mark.parametrize(
    ("count", "steps", "after"),
    [
        (3, 20, {5, 10, 15}),
        (2, 20, {6, 13}),
        (1, 20, {10}),
        (3, 4, {1, 2, 3}),
        (3, 2, {1}),  # a two-step model shows one
        (3, 1, set()),  # a one-step (turbo) model's image is its only one
    ],
)
def test_previews_are_spread_over_the_steps(count: int, steps: int, after: set[int]) -> None:
    assert Previews(count, lambda drawn: None).after(steps) == after
