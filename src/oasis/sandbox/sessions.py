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
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
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


class PythonSession:
    """One sandboxed interpreter; calls run one at a time."""

    def __init__(self, limits: Limits, on_start: Callable[[PythonSession], Awaitable[None]] | None = None) -> None:
        self._limits = limits
        # Called as the interpreter (re)starts: the pool tracks it again, even after closing it as idle.
        self._on_start = on_start
        # Names of the files placed in this interpreter's /mnt/data (a restarted one starts empty).
        self.placed: set[str] = set()
        self._process: asyncio.subprocess.Process | None = None
        self._answers: asyncio.StreamReader | None = None
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
            user = bubblewrap.sandbox_user()
            extra: dict[str, object] = {}
            if user is not None:
                extra = {"user": user[0], "group": user[1], "extra_groups": []}
            self._process = await asyncio.create_subprocess_exec(
                *bubblewrap.command(_DRIVER, self._limits, write_end),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=(write_end,),
                start_new_session=True,
                **extra,  # type: ignore[arg-type]
            )
        finally:
            os.close(write_end)
        loop = asyncio.get_running_loop()
        answers = self._answers = asyncio.StreamReader(limit=64 << 20)
        await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(answers), os.fdopen(read_end, "rb", buffering=0)
        )

    async def run(self, code: str, files: dict[str, bytes] | None = None) -> Execution:
        """Runs `code` after placing `files` (name -> content) in /mnt/data."""
        async with self._lock:
            self.last_used = time.monotonic()
            if not self.alive:
                self.placed = set()
                if self._on_start is not None:
                    await self._on_start(self)
                await self.start()
            execution = await self._call(code, files or {})
            self.last_used = time.monotonic()
            return execution

    async def _call(self, code: str, files: dict[str, bytes]) -> Execution:
        assert self._process is not None and self._process.stdin is not None and self._answers is not None
        encoded = {name: base64.b64encode(data).decode("ascii") for name, data in files.items()}
        try:
            self._process.stdin.write((json.dumps({"code": code, "files": encoded}) + "\n").encode())
            await self._process.stdin.drain()
            line = await asyncio.wait_for(self._answers.readline(), self._limits.call_seconds)
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
        self.placed.update(files)
        answer = json.loads(line)
        images = [base64.b64decode(image) for image in answer.get("images", [])]
        written = {name: base64.b64decode(data) for name, data in answer.get("files", {}).items()}
        return Execution(answer.get("logs", ""), answer.get("error"), images, written)

    async def _death_reason(self) -> str:
        assert self._process is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._process.wait(), 2)
        message = b""
        if self._process.stderr is not None:
            with contextlib.suppress(Exception):
                message = await asyncio.wait_for(self._process.stderr.read(2000), 1)
        code = self._process.returncode
        if code is not None and code < 0:
            import signal

            name = signal.Signals(-code).name
            return {"SIGXCPU": f"its CPU time ({self._limits.cpu_seconds} s) ran out"}.get(name, f"killed by {name}")
        return message.decode(errors="replace").strip() or f"exit status {code}"

    async def close(self) -> None:
        process, self._process = self._process, None
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
        self._limits = limits
        self._max_sessions = max_sessions
        self._idle_seconds = idle_seconds
        self._sessions: OrderedDict[str, PythonSession] = OrderedDict()
        self._unavailable: str | None = None
        self._checked = False
        self._reaper: asyncio.Task[None] | None = None

    async def check(self) -> None:
        """Raises SandboxUnavailable, once and for all, when a sandbox cannot start here."""
        if not self._checked:
            self._checked = True
            self._unavailable = await self._probe()
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
            result = await session._call("print(6 * 7)", {})
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

    async def session(self, key: str) -> PythonSession:
        await self.check()
        found = self._sessions.get(key)
        if found is None:

            async def track(session: PythonSession) -> None:
                await self._track(key, session)

            found = PythonSession(self._limits, on_start=track)
            self._sessions[key] = found
        self._sessions.move_to_end(key)
        return found

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

    @property
    def live_sessions(self) -> int:
        return sum(1 for session in self._sessions.values() if session.alive)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for session in list(self._sessions.values()):
            await session.close()
        self._sessions.clear()
