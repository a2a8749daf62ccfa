"""A server process for a benchmark: on a free loopback port, its output in a log file, waited for until its
/health answers 200, stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def oasis_environment() -> dict[str, str]:
    """This environment without OASIS_ settings, so that only the benchmark's config applies."""
    return {key: value for key, value in os.environ.items() if not key.startswith("OASIS_")}


@contextlib.contextmanager
def running(
    name: str, command: list[str], port: int, log: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> Iterator[str]:
    """Runs `command` (which listens on `port`) and yields its base URL once healthy."""
    with running_process(name, command, port, log, env, timeout) as (base, _):
        yield base


def pause(process: subprocess.Popen[Any], paused: bool) -> None:
    """Freezes a server started by `running_process` (and any child of it) or lets it go on: a frozen server
    takes no CPU time at all, so it cannot disturb the one being measured."""
    os.killpg(process.pid, signal.SIGSTOP if paused else signal.SIGCONT)


@contextlib.contextmanager
def running_process(
    name: str, command: list[str], port: int, log: Path, env: dict[str, str] | None = None, timeout: float = 180
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """As `running`, and the process too, leader of its own process group (for `pause`)."""
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not become healthy; see {log}")
            time.sleep(0.2)
        yield base, process
    finally:
        if process.poll() is None:
            pause(process, False)  # a frozen process would not act on the signal below
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
