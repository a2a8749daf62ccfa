"""Python sessions in sandboxes, one per key (an Assistants thread): started on first use, kept between calls so
variables and files live on, closed after being idle, and bounded in number (the least recently used goes
first)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from oasis.sandbox import bubblewrap
from oasis.sandbox.bubblewrap import Limits

log = logging.getLogger("oasis.sandbox")

_DRIVER = (Path(__file__).parent / "driver.py").read_text(encoding="utf-8")


class SandboxUnavailable(Exception):
    """The sandbox cannot start on this machine; the message says why."""


@dataclass
class Execution:
    logs: str
    error: str | None
    images: list[bytes] = field(default_factory=list)
    # Files the call wrote or changed in /mnt/data, by their path there.
    files: dict[str, bytes] = field(default_factory=dict)


PROBE_RETRY_SECONDS = 60.0
# The longest answer line read from the sandbox, and what an answer may hold (more is cut, not trusted).
ANSWER_LIMIT = 64 << 20
MAX_LOG_CHARS = 20_000
MAX_IMAGES = 8
MAX_FILES = 20
MAX_RETURNED_BYTES = 32 << 20


def _checked_answer(answer: object) -> Execution:
    """The driver's answer, checked for shape and held to the limits whatever the code wrote into it."""
    if not isinstance(answer, dict):
        raise TypeError("not an object")
    logs = answer.get("logs") or ""
    error = answer.get("error")
    images = answer.get("images") or []
    files = answer.get("files") or {}
    if not isinstance(logs, str) or not (error is None or isinstance(error, str)):
        raise TypeError("logs and error must be strings")
    if not isinstance(images, list) or not isinstance(files, dict):
        raise TypeError("images must be a list and files an object")
    budget = MAX_RETURNED_BYTES
    decoded_images = []
    for image in images[:MAX_IMAGES]:
        data = base64.b64decode(image, validate=True)
        if len(data) <= budget:
            decoded_images.append(data)
            budget -= len(data)
    written: dict[str, bytes] = {}
    for name, content in list(files.items())[:MAX_FILES]:
        # A path under /mnt/data as the sandbox names it; it only ever names the output file, never a host path.
        if not isinstance(name, str) or not name or name.startswith("/") or ".." in name.split("/"):
            continue
        data = base64.b64decode(content, validate=True)
        if len(data) <= budget:
            written[name] = data
            budget -= len(data)
    return Execution(logs[-MAX_LOG_CHARS:], error[:MAX_LOG_CHARS] if error else None, decoded_images, written)


def _descendants(root: int) -> dict[int, list[int]]:
    """Children by parent, for `root` and every process under it (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    for pids in children.values():
        pids.sort()
    tree: dict[int, list[int]] = {}
    waiting = [root]
    while waiting:
        pid = waiting.pop()
        tree[pid] = children.get(pid, [])
        waiting.extend(tree[pid])
    return tree


class PythonSession:
    """One sandboxed interpreter; calls run one at a time."""

    def __init__(self, limits: Limits, on_start: Callable[[PythonSession], Awaitable[None]] | None = None) -> None:
        self._limits = limits
        # Called as the interpreter (re)starts: the pool tracks it again, even after closing it as idle.
        self._on_start = on_start
        # The files placed in this interpreter's /mnt/data, name -> the caller's tag for its content (a file id),
        # so that a name given other content is placed again (a restarted interpreter starts empty).
        self.placed: dict[str, str] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._answers: asyncio.StreamReader | None = None
        self._pipe: asyncio.BaseTransport | None = None
        self._lock = asyncio.Lock()
        self.last_used = time.monotonic()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def start(self) -> None:
        read_end, write_end = os.pipe()
        try:
            self._process = await asyncio.create_subprocess_exec(
                *bubblewrap.command(_DRIVER, self._limits, write_end),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(write_end,),
                start_new_session=True,
                # Not the server's environment: bwrap's own process inside the sandbox keeps the environment it
                # was started with, readable there as /proc/1/environ (`--clearenv` only clears the driver's).
                env={"PATH": "/usr/bin:/bin"},
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        loop = asyncio.get_running_loop()
        answers = self._answers = asyncio.StreamReader(limit=ANSWER_LIMIT)
        self._pipe, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(answers), os.fdopen(read_end, "rb", buffering=0)
        )

    async def run(
        self, code: str, files: dict[str, bytes] | None = None, tags: dict[str, str] | None = None
    ) -> Execution:
        """Runs `code` after placing `files` (name -> content) in /mnt/data; `tags` (name -> what the content is,
        a file id) are remembered in `placed`."""
        async with self._lock:
            self.last_used = time.monotonic()
            if not self.alive:
                self.placed = {}
                if self._on_start is not None:
                    await self._on_start(self)
                await self.start()
            try:
                execution = await self._call(code, files or {}, tags or {})
            except BaseException:
                await self.close()  # cancelled mid-call: the interpreter is in an unknown state
                raise
            self.last_used = time.monotonic()
            return execution

    async def _call(self, code: str, files: dict[str, bytes], tags: dict[str, str]) -> Execution:
        assert self._process is not None and self._process.stdin is not None and self._answers is not None
        encoded = {name: base64.b64encode(data).decode("ascii") for name, data in files.items()}
        try:
            # One clock for sending the request and reading the answer: code that stops reading its input
            # must not hold the call up either.
            async with asyncio.timeout(self._limits.call_seconds):
                self._process.stdin.write((json.dumps({"code": code, "files": encoded}) + "\n").encode())
                await self._process.stdin.drain()
                line = await self._answers.readline()
        except TimeoutError:
            await self.close()
            return Execution(
                "", f"Execution timed out after {self._limits.call_seconds:g} seconds; the session was restarted."
            )
        except (ConnectionError, OSError, ValueError):  # ValueError: an answer over the reader's limit
            line = b""
        if not line:  # the interpreter died: out of CPU time, killed, or it could not start
            reason = await self._death_reason()
            await self.close()
            return Execution("", f"The Python session ended: {reason}; it starts again on the next call.")
        await asyncio.to_thread(self._stop_strays)
        # The code runs in the driver's process and can write what it likes on the answer pipe: it is checked
        # and bounded here, as anything else from the sandbox.
        try:
            execution = _checked_answer(json.loads(line))
        except (ValueError, TypeError, KeyError) as exc:
            await self.close()
            return Execution("", f"The Python session gave an unreadable answer ({exc}); it was restarted.")
        self.placed.update({name: tags.get(name, "") for name in files})
        return execution

    def _stop_strays(self) -> None:
        """Kills processes the code started and left running: a call's wall clock and the per-process CPU and
        memory limits must not be dodged by work left in the background. The driver and bwrap's own processes
        stay."""
        if self._process is None:
            return
        tree = _descendants(self._process.pid)
        keep = {self._process.pid}
        keep.update(child for child in tree.get(self._process.pid, []))  # bwrap's process 1 in the sandbox
        for init in list(keep - {self._process.pid}):
            keep.update(tree.get(init, [])[:1])  # the driver: process 1's first child
        for children in tree.values():
            for pid in children:
                if pid not in keep:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)

    async def _death_reason(self) -> str:
        assert self._process is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._process.wait(), 2)
        message = b""
        if self._process.stderr is not None:
            with contextlib.suppress(Exception):
                message = await asyncio.wait_for(self._process.stderr.read(2000), 1)
        code = self._process.returncode
        # bwrap reports a command killed by a signal as 128 + the signal's number.
        number = -code if code is not None and code < 0 else (code - 128 if code is not None and code > 128 else 0)
        if number:
            with contextlib.suppress(ValueError):
                name = signal.Signals(number).name
                return {"SIGXCPU": f"its CPU time ({self._limits.cpu_seconds} s) ran out"}.get(
                    name, f"killed by {name}"
                )
        return message.decode(errors="replace").strip() or f"exit status {code}"

    async def close(self) -> None:
        self.placed = {}  # a new interpreter starts with an empty /mnt/data
        process, self._process = self._process, None
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.close()
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)  # bwrap and, through --die-with-parent, everything in the sandbox
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait(), 5)


class SandboxPool:
    """The sessions of one process, by key."""

    def __init__(self, limits: Limits, max_sessions: int, idle_seconds: float) -> None:
        self.limits = limits
        self._limits = limits
        self._max_sessions = max_sessions
        self._idle_seconds = idle_seconds
        self._sessions: OrderedDict[str, PythonSession] = OrderedDict()
        self._unavailable: str | None = None
        self._check_again_at = 0.0
        self._reaper: asyncio.Task[None] | None = None

    async def check(self) -> None:
        """Raises SandboxUnavailable when a sandbox cannot start here; a failed check is tried again a minute
        later (it may have been a passing fault, such as a probe timed out on a saturated machine)."""
        if time.monotonic() >= self._check_again_at:
            self._unavailable = await self._probe()
            self._check_again_at = float("inf") if not self._unavailable else time.monotonic() + PROBE_RETRY_SECONDS
            if self._unavailable:
                log.warning("code_interpreter is not available: %s", self._unavailable)
        if self._unavailable:
            raise SandboxUnavailable(self._unavailable)

    async def _probe(self) -> str | None:
        if shutil.which("bwrap") is None:
            return "bubblewrap (bwrap) is not installed; on Debian or Ubuntu: apt install bubblewrap"
        session = PythonSession(self._limits)
        try:
            await session.start()
            result = await session._call("print(6 * 7)", {}, {})
        except OSError as exc:
            return f"bwrap could not start: {exc}"
        finally:
            await session.close()
        if result.logs.strip() == "42":
            return None
        user = bubblewrap.sandbox_user()
        hint = ""
        if user is not None:
            hint = (
                f" The sandbox runs as uid {user[0]} when the server runs as root: that user must be able to read "
                f"the Python installation ({', '.join(bubblewrap.python_roots())}) and every folder above it."
            )
        return f"a test run in the sandbox failed ({result.error or result.logs.strip()}).{hint}"

    async def session(self, key: str, memory_mb: int | None = None) -> PythonSession:
        """The session of `key`, made when there is none; `memory_mb`: its processes' address space, in place of
        the pool's (a container's `memory_limit`)."""
        await self.check()
        found = self._sessions.get(key)
        if found is None:

            async def track(session: PythonSession) -> None:
                await self._track(key, session)

            limits = self._limits if memory_mb is None else replace(self._limits, memory_mb=memory_mb)
            found = PythonSession(limits, on_start=track)
            self._sessions[key] = found
        self._sessions.move_to_end(key)
        return found

    def find(self, key: str) -> PythonSession | None:
        """The session of `key`, when the pool has one (none is made)."""
        return self._sessions.get(key)

    async def _track(self, key: str, session: PythonSession) -> None:
        """A session about to start its interpreter: tracked (again), and the oldest idle ones closed while
        there are more than `max_sessions`."""
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        for other_key, other in list(self._sessions.items()):
            if len(self._sessions) <= self._max_sessions:
                break
            if other is not session and not other.busy:
                self._sessions.pop(other_key)
                await other.close()
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap())

    async def _reap(self) -> None:
        """Closes sessions idle for longer than `idle_seconds` (their folders stay, for the next session)."""
        while self._sessions:
            await asyncio.sleep(min(self._idle_seconds, 30.0))
            now = time.monotonic()
            for key, session in list(self._sessions.items()):
                if now - session.last_used > self._idle_seconds and not session.busy:
                    self._sessions.pop(key, None)
                    await session.close()

    async def end(self, key: str) -> None:
        """Ends the session of `key` (its variables and files gone), when there is one."""
        session = self._sessions.pop(key, None)
        if session is not None:
            await session.close()

    @property
    def live_sessions(self) -> int:
        return sum(1 for session in self._sessions.values() if session.alive)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for session in list(self._sessions.values()):
            await session.close()
        self._sessions.clear()
