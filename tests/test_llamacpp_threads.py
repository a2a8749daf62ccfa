"""The engine decodes with as many threads as the rest of the machine leaves cores free (issue 12: llama.cpp's
threads spin at barriers, so one busy core beside two decoding threads slows every step many times over)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from oasis.engines.llamacpp import native
from oasis.engines.llamacpp import threads as core_threads
from oasis.engines.llamacpp.engine import LlamaCppEngine
from oasis.engines.llamacpp.threads import CoreShare, CpuSample
from oasis.engines.text import SamplingParams
from oasis.settings import ModelSpec
from tests.conftest import smollm

# The engine's thread count answers the machine's load: another test running beside these would be that load.
pytestmark = pytest.mark.alone

ENGINE_THREAD, MAIN_THREAD, OMP_WORKER, EMBEDDER = 101, 100, 102, 103


class Machine:
    """Synthetic /proc readings: each `advance` adds CPU seconds to threads and to the cores' busy time."""

    def __init__(self) -> None:
        self.at = 1000.0
        self.cores_busy = 0.0
        self.process = 0.0
        self.live = {MAIN_THREAD: 0.0, ENGINE_THREAD: 0.0, OMP_WORKER: 0.0, EMBEDDER: 0.0}

    def advance(self, seconds: float, *, outside: float = 0.0, ended: float = 0.0, **threads: float) -> None:
        """`outside`: cores' worth used by other processes; `ended`: CPU seconds of threads that came and went;
        keyword arguments: cores' worth used by each named thread of this process."""
        ids = {"main": MAIN_THREAD, "engine": ENGINE_THREAD, "omp": OMP_WORKER, "embedder": EMBEDDER}
        used = 0.0
        for name, cores in threads.items():
            self.live[ids[name]] += cores * seconds
            used += cores * seconds
        self.process += used + ended
        self.cores_busy += used + ended + outside * seconds
        self.at += seconds

    def sample(self, name: str) -> CpuSample:
        assert name == "oasis-llm-test"
        return CpuSample(
            self.at, self.cores_busy, self.process, dict(self.live), frozenset({MAIN_THREAD, ENGINE_THREAD, OMP_WORKER})
        )


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    machine = Machine()
    monkeypatch.setattr(core_threads.time, "monotonic", lambda: machine.at)
    return machine


def share(machine: Machine, most: int = 2, cores: int = 2) -> CoreShare:
    core_share = CoreShare(most, "oasis-llm-test", sample=machine.sample, cores=cores)
    assert core_share.threads() == most  # nothing measured yet
    return core_share


def test_a_quiet_machine_keeps_every_thread(machine: Machine) -> None:
    core_share = share(machine)
    machine.advance(0.5, engine=1.0, omp=1.0, main=0.3, outside=0.1)  # the engine itself fills both cores
    assert core_share.threads() == 2
    assert core_share.others_busy == pytest.approx(0.1)


def test_a_busy_core_elsewhere_leaves_one_thread_and_a_quiet_one_gives_it_back(machine: Machine) -> None:
    core_share = share(machine)
    machine.advance(0.5, engine=0.7, omp=0.6, outside=0.7)  # another program's process takes its share
    assert core_share.threads() == 1
    machine.advance(0.5, engine=1.0, outside=1.0)
    assert core_share.threads() == 1
    machine.advance(0.5, engine=1.0, outside=0.05)
    assert core_share.threads() == 2


def test_another_engine_of_this_process_counts_as_load(machine: Machine) -> None:
    core_share = share(machine)
    machine.advance(0.5, engine=1.0, embedder=0.9)
    assert core_share.threads() == 1


def test_threads_that_came_and_went_are_the_engines_own(machine: Machine) -> None:
    core_share = share(machine)
    machine.advance(0.5, engine=1.0, ended=0.45)  # ggml built without OpenMP starts its workers per step
    assert core_share.threads() == 2


def test_never_fewer_than_one_nor_more_than_asked(machine: Machine) -> None:
    core_share = share(machine, most=3, cores=4)
    machine.advance(0.5, engine=1.0, outside=4.0)
    assert core_share.threads() == 1
    machine.advance(0.5, engine=1.0)
    assert core_share.threads() == 3


def test_the_machine_is_read_twice_a_second_at_most(machine: Machine) -> None:
    core_share = share(machine)
    machine.advance(0.2, engine=1.0, outside=2.0)
    assert core_share.threads() == 2  # too soon to measure again
    machine.advance(0.3, engine=1.0, outside=2.0)
    assert core_share.threads() == 1


@pytest.fixture
def busy_core() -> Iterator[None]:
    """Another program keeps one core busy (on this machine: the 2-core CI machine's other core)."""
    if len(os.sched_getaffinity(0)) != 2:
        pytest.skip("measured on a 2-core machine, where one busy process leaves one core free")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def test_proc_readings_see_a_busy_process_and_not_the_engines_own_threads(busy_core: None) -> None:
    core_share = CoreShare(2, "oasis-llm-own")
    seen: list[int] = []

    def engine_thread() -> None:
        core_threads.name_this_thread("oasis-llm-own")
        stop = time.monotonic() + 1.3
        core_share.threads()
        while time.monotonic() < stop:  # the engine's own work does not count against it
            pass
        seen.append(core_share.threads())

    worker = threading.Thread(target=engine_thread)
    worker.start()
    worker.join()
    assert seen == [1] and core_share.others_busy > 0.7


def llama_threads(engine: LlamaCppEngine) -> tuple[int, int]:
    """What llama.cpp itself will decode and read prompts with (not the engine's own note of it)."""
    lib = native.lib()
    context = engine._context
    return int(lib.llama_n_threads(context)), int(lib.llama_n_threads_batch(context))


async def generate_for(engine: LlamaCppEngine, seconds: float) -> None:
    """Decodes for at least `seconds` (longer than a measuring interval), a 48-token request at a time."""
    prompt = engine.tokenize("Tell a long story.", add_special=True, parse_special=False)
    params = SamplingParams(max_tokens=48, temperature=0.8, seed=7, ignore_eos=True)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        assert len([token async for token in engine.generate(prompt, params)]) == 48


async def test_the_engine_decodes_with_one_thread_beside_a_busy_process(busy_core: None) -> None:
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256, threads=2)))
    await engine.start()
    try:
        await generate_for(engine, 1.5)
        assert engine.decode_threads == 1 and llama_threads(engine) == (1, 1)
    finally:
        await engine.close()


async def test_the_engine_keeps_every_core_on_a_quiet_machine() -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256, threads=2)))
    await engine.start()
    try:
        await generate_for(engine, 1.5)
        await asyncio.sleep(0)
        assert engine.decode_threads == 2 and llama_threads(engine) == (2, 2)
    finally:
        await engine.close()


async def test_an_idle_engine_follows_the_load_so_a_request_starts_with_the_right_count(busy_core: None) -> None:
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256, threads=2)))
    await engine.start()
    try:
        assert engine.decode_threads == 2  # nothing measured yet
        until = time.monotonic() + 5.0  # idle beside the busy process: two readings on whole seconds are enough
        while engine.decode_threads != 1 and time.monotonic() < until:
            await asyncio.sleep(0.1)
        assert engine.decode_threads == 1 and llama_threads(engine) == (1, 1)
    finally:
        await engine.close()


def test_an_idle_engine_reads_on_the_whole_second_and_only_when_adapting(machine: Machine) -> None:
    machine.at = 1000.25
    core_share = share(machine)
    assert core_share.seconds_to_idle_reading() == pytest.approx(0.75)
    machine.at = 1000.9995  # a wait that ended a hair early: the next reading is a whole second away
    assert core_share.seconds_to_idle_reading() == pytest.approx(1.0005)
    fixed = CoreShare(2, "oasis-llm-test", sample=lambda name: None, cores=2)
    fixed.threads()  # no /proc: nothing to adapt to
    assert fixed.seconds_to_idle_reading() is None


async def test_adapt_threads_false_keeps_the_count_whatever_the_load(busy_core: None) -> None:
    engine = LlamaCppEngine(ModelSpec(**smollm(parallel=1, context_length=256, threads=2, adapt_threads=False)))
    await engine.start()
    try:
        await generate_for(engine, 1.5)  # three measuring intervals: an engine that adapted would be at 1 by now
        assert engine.decode_threads == 2 and llama_threads(engine) == (2, 2)
    finally:
        await engine.close()


def test_a_reading_across_an_idle_gap_is_dropped(machine: Machine) -> None:
    core_share = share(machine)
    machine.advance(30.0, outside=1.5)  # the engine sat idle while a build ran, which has ended since
    assert core_share.threads() == 2  # a 30-second average says little about now: not used
    machine.advance(0.5, engine=1.0)
    assert core_share.threads() == 2
    machine.advance(0.5, engine=1.0, outside=1.0)
    assert core_share.threads() == 1


def test_without_proc_the_count_is_kept_and_proc_is_not_read_again() -> None:
    reads: list[str] = []

    def no_proc(name: str) -> CpuSample | None:
        reads.append(name)
        return None

    core_share = CoreShare(2, "oasis-llm-test", sample=no_proc, cores=2)
    assert [core_share.threads() for _ in range(5)] == [2] * 5
    assert len(reads) == 1  # not a failed file read before every decoding step


def test_the_busy_time_of_the_allowed_cores_is_read_from_proc_stat() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    stat = (
        "cpu  900 0 900 9000 90 0 0 0 0 0\n"  # every core together: not counted again
        "cpu0 100 7 200 5000 40 3 4 5 0 0\n"  # user, nice, system, idle, iowait, irq, softirq, steal
        "cpu1 1000 0 1000 1000 0 0 0 0 0 0\n"
        "cpu2 10 0 10 10 0 0 0 0 0 0\n"
        "intr 123456 " + " ".join(["1"] * 5000) + "\n"  # interrupt counts, not CPU time
        "ctxt 98765\n"
        "cpu9 999 999 999 999 0 0 0 0 0 0\n"  # not a CPU line's place: never read
    )
    # cpu0 busy: user 100 + system 200 + irq 3 + softirq 4 + steal 5 (not nice, idle or iowait); cpu1 is not allowed
    assert core_threads._cores_busy(stat, {0, 2, 9}) == pytest.approx((312 + 20) / ticks)


def test_a_thread_whose_name_is_not_text_does_not_stop_the_reading() -> None:
    started, stop = threading.Event(), threading.Event()

    def oddly_named() -> None:
        # a library may name its thread anything, bytes that are not UTF-8 included
        import ctypes

        ctypes.CDLL(None).prctl(15, b"\xff\xfeodd", 0, 0, 0)
        started.set()
        stop.wait()

    thread = threading.Thread(target=oddly_named)
    thread.start()
    try:
        assert started.wait(timeout=10)
        sample = core_threads._read_sample("oasis-llm-x", core_threads._allowed_cores())
        assert sample is not None and thread.native_id in sample.live_threads
    finally:
        stop.set()
        thread.join()
