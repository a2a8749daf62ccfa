"""How many threads llama.cpp should decode with, given what else keeps this machine's cores busy.

llama.cpp's threads spin at the barriers between a graph's operations. When another program (a browser, a build,
another engine in this process) wants one of the same cores, the kernel deschedules one of them for a time slice
and every other thread spins until it comes back: on 2 busy cores, 40 tokens took 41 s with 2 threads and 0.5 s
with 1. So the engine decodes with as many threads as there are cores that the rest of the machine leaves free,
re-measured twice a second, and at least one (bench/busy_machine.py measures the effect).

"The rest" is read from Linux's own accounting: the busy time of the CPUs this process may run on (/proc/stat),
less what this engine used: its scheduler thread and ggml's workers (OpenMP's pool, whose threads take the name
of the thread that started them, which the engine names uniquely), threads that came and went since the last look
(ggml's own workers where it is built without OpenMP), and the main thread (the event loop, which streams this
engine's tokens out). What the other threads of this process used, an embedding or speech engine, counts as
someone else's, as it should. Where /proc is missing (macOS, Windows) the configured count is used as it is.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oasis.wakeups import seconds_to_next_tick

MEASURE_EVERY_SECONDS = 0.5
# An idle engine still reads the machine's load, this often and on the whole second of the monotonic clock (where the
# server's other idle wake-ups fall, oasis/wakeups.py): a request that comes after an idle spell then decodes its
# first steps with the count the last second calls for, not the one chosen before the spell (beside a busy core, two
# threads can take a second a step).
IDLE_READING_SECONDS = 1.0
# A longer gap between two readings is an idle engine: the average over it says little about now, so it is dropped.
STALE_AFTER_SECONDS = 5.0
# user, system, irq, softirq, steal; not idle or iowait, and not nice: the kernel runs niced work behind ours
_BUSY_FIELDS = (0, 2, 5, 6, 7)


@dataclass(frozen=True)
class CpuSample:
    at: float  # monotonic seconds
    cores_busy: float  # CPU seconds the allowed cores spent busy since boot, everyone together
    process: float  # CPU seconds of this process, every thread, the ended ones included
    live_threads: dict[int, float]  # CPU seconds of each live thread of this process
    engine_threads: frozenset[int]  # this engine's live threads (and the main thread's, which serves its tokens)


class CoreShare:
    """Tells the engine's scheduler thread how many threads to decode with (`threads()`, called after a step when
    `due()`, and by an idle engine every IDLE_READING_SECONDS: every MEASURE_EVERY_SECONDS at most it reads a few
    /proc files; cheap otherwise)."""

    def __init__(
        self,
        most: int,
        thread_name: str,
        sample: Callable[[str], CpuSample | None] | None = None,
        cores: int | None = None,
    ) -> None:
        """`thread_name`: the name the engine gave its scheduler thread with `name_this_thread`."""
        self._most = most
        self._thread_name = thread_name
        allowed = _allowed_cores()  # the process's mask, read once from the thread that builds the engine
        self._sample = sample or (lambda name: _read_sample(name, allowed))
        self._cores = cores or len(allowed) or os.cpu_count() or 1
        # Under a CPU quota wider than it (docker --cpus without a cpuset), /proc/stat counts cores this process
        # never gets: nothing to go by.
        self._adapting = sample is not None or not _quota_below(self._cores)
        self._last: CpuSample | None = None
        self._threads = most
        self.others_busy = 0.0  # cores' worth of work others did over the last measured interval (for logs, tests)

    def seconds_to_idle_reading(self) -> float | None:
        """How long an idle engine waits before its next reading; None: it need not read at all."""
        if not self._adapting:
            return None
        return seconds_to_next_tick(IDLE_READING_SECONDS, time.monotonic())

    def due(self) -> bool:
        """Whether the next `threads()` reads /proc (about a millisecond) rather than answering at once."""
        last = self._last
        return self._adapting and (last is None or time.monotonic() - last.at >= MEASURE_EVERY_SECONDS)

    def threads(self) -> int:
        if not self._adapting:
            return self._most
        if not self.due():
            return self._threads
        last = self._last
        current = self._sample(self._thread_name)
        if current is None:  # no /proc (or an unreadable one): nothing to go by, now or at later steps
            self._adapting = False
            return self._most
        if last is not None and last.at < current.at < last.at + STALE_AFTER_SECONDS:
            self.others_busy = _others_busy(last, current)
            # the free cores, rounded: a core others use half the time costs a spinning thread about what it gives
            free = self._cores - self.others_busy
            self._threads = max(1, min(self._most, math.floor(free + 0.5)))
        self._last = current
        return self._threads


def _others_busy(before: CpuSample, after: CpuSample) -> float:
    """Cores' worth of work done by everything but this engine between two samples."""
    elapsed = after.at - before.at
    earlier = before.live_threads
    lived_through = {tid: seconds - earlier[tid] for tid, seconds in after.live_threads.items() if tid in earlier}
    # the process's time less its live threads' is that of threads that ended: ggml's workers of this engine's steps
    ended_threads = max(0.0, (after.process - before.process) - sum(lived_through.values()))
    engine = sum(seconds for tid, seconds in lived_through.items() if tid in after.engine_threads) + ended_threads
    return max(0.0, (after.cores_busy - before.cores_busy) - engine) / elapsed if elapsed > 0 else 0.0


_PR_SET_NAME = 15
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _allowed_cores() -> set[int]:
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()


def name_this_thread(name: str) -> None:
    """Give the calling thread a kernel-visible name (15 bytes at most), which the threads it starts inherit."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _quota_below(cores: int) -> bool:
    """Whether a cgroup v2 CPU quota gives this process fewer cores than its affinity mask lists."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return False
    return quota != "max" and int(quota) / int(period) < cores


def _read_sample(thread_name: str, allowed: set[int]) -> CpuSample | None:
    try:
        at = time.monotonic()
        cores_busy = _cores_busy(_read_proc("/proc/stat"), allowed)
        live_threads: dict[int, float] = {}
        engine_threads = {os.getpid()}  # the main thread's id is the process's
        name = thread_name[:15]
        for task in os.listdir("/proc/self/task"):
            try:
                stat = _read_proc(f"/proc/self/task/{task}/stat")
            except OSError:
                continue  # a thread that ended while being listed
            tid = int(task)
            live_threads[tid] = _thread_seconds(stat)
            if stat[stat.index("(") + 1 : stat.rindex(")")] == name:
                engine_threads.add(tid)
    except (OSError, ValueError):  # no /proc, or a format this reader does not know
        return None
    times = os.times()
    return CpuSample(at, cores_busy, times.user + times.system, live_threads, frozenset(engine_threads))


def _read_proc(path: str) -> str:
    """A /proc file's text. This runs on the engine's thread between two decodes, for every thread of the process
    twice a second (once a second while the engine is idle): os.open/os.read cost a fifth of what pathlib's
    read_text does (no buffered text layer)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(descriptor, 65536):
            chunks.append(chunk)
    finally:
        os.close(descriptor)
    return b"".join(chunks).decode("ascii", "replace")


def _cores_busy(stat: str, allowed: set[int]) -> float:
    ticks = 0
    for line in stat.splitlines():
        name, _, values = line.partition(" ")
        if not name.startswith("cpu"):
            break  # the per-CPU lines come first; the rest (interrupt counts, one long line) is not needed
        if name == "cpu":
            continue
        if allowed and int(name[3:]) not in allowed:
            continue
        fields = [int(value) for value in values.split()]
        ticks += sum(fields[index] for index in _BUSY_FIELDS if index < len(fields))
    return ticks / _TICKS


def _thread_seconds(stat: str) -> float:
    # The command name (field 2) may hold spaces and parentheses: the fields after it start past the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15 of proc(5)
