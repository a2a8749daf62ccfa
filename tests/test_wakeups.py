"""An idle server's timed wake-ups fall on one grid, so that they come together."""

from __future__ import annotations

import asyncio

import pytest

from oasis.wakeups import until_next_tick


@pytest.mark.parametrize(
    ("now", "period", "wait"),
    [
        (1234.25, 1.0, 0.75),
        (1234.0, 1.0, 1.0),  # on a tick: the next one
        (1233.9995, 1.0, 1.0005),  # a timer that fired a hair early: not the tick just due again
        (10.0, 2.5, 2.5),
        (11.0, 2.5, 1.5),
        (7.01, 0.05, 0.04),
    ],
)
async def test_waits_end_on_the_next_multiple_of_the_period(now: float, period: float, wait: float) -> None:
    loop = asyncio.get_running_loop()
    loop.time = lambda: now  # type: ignore[method-assign]
    try:
        assert until_next_tick(period) == pytest.approx(wait, abs=1e-9)
    finally:
        del loop.time  # the class's clock again


async def test_two_loops_with_the_same_period_wake_together() -> None:
    loop = asyncio.get_running_loop()
    woken: list[float] = []

    async def idle_loop() -> None:
        await asyncio.sleep(until_next_tick(1.0))
        woken.append(loop.time())

    await asyncio.sleep(until_next_tick(1.0) + 0.05)  # just past a tick: the next is 0.95 s away
    first = asyncio.ensure_future(idle_loop())
    await asyncio.sleep(0.3)  # the second starts waiting later, and still wakes at the same tick
    await asyncio.gather(first, idle_loop())
    assert abs(woken[0] - woken[1]) < 0.05
