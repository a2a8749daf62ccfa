"""An idle server's timed wake-ups fall on one grid, so that they come together."""

from __future__ import annotations

import asyncio

import pytest

from oasis.wakeups import until_next_tick


@pytest.mark.parametrize("period", [0.05, 1.0, 2.5])
async def test_waits_end_on_multiples_of_the_period(period: float) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(3):
        started = loop.time()
        wait = until_next_tick(period)
        assert 0 < wait <= period + 0.002
        ends = started + wait  # the clock moves on while it is read: a millisecond of slack
        assert ends == pytest.approx(round(ends / period) * period, abs=0.001)
        await asyncio.sleep(0.013)


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
