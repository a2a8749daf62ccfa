"""How a sandboxed Python process is started: bubblewrap (`bwrap`) with every namespace unshared.

What the code inside can and cannot do (the threat model in the README):
- It sees a filesystem made for it: the system's `/usr` (and `/bin`, `/lib`...) and the Python installation
  read-only (of `/etc`, only `/etc/fonts`), a private `/tmp`, its own `/proc` (only its processes), a minimal
  `/dev`, and its working folder `/mnt/data`, a memory file system of bounded size that nothing outside shares:
  files go in and out through the driver's pipe. Not the host's `/etc`, home folders, oasis's data folder or
  database, other threads' files, nor other processes.
- It has no network: a network namespace of its own has only a loopback device nobody listens on.
- It runs as an unprivileged user: the server's own user, or `nobody` (65534) when the server runs as root, so
  the kernel's per-user process limit applies; the driver sets its limits (memory, CPU time, processes, file
  size) before running any code, and the code cannot raise them. A wall clock per call is kept from outside:
  past it the whole sandbox is killed.
- Not covered: kernel exploits (there is no seccomp filter), and side channels such as CPU load.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

# The user sandboxes run as when the server runs as root (`nobody` on Debian and most distributions).
NOBODY = 65534
WORK_FOLDER = "/mnt/data"


@dataclass(frozen=True)
class Limits:
    call_seconds: float = 60.0
    memory_mb: int = 1024
    cpu_seconds: int = 600
    processes: int = 32
    file_mb: int = 100
    folder_mb: int = 256


def sandbox_user() -> tuple[int, int] | None:
    """(uid, gid) to switch to before starting bwrap, or None to start it as the server's own user."""
    return (NOBODY, NOBODY) if os.geteuid() == 0 else None


def _system_mounts() -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64"):
        path = Path("/") / name
        if path.is_symlink():  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    # Of the host's /etc, only the font configuration (matplotlib's text needs it).
    if Path("/etc/fonts").is_dir():
        args += ["--ro-bind", "/etc/fonts", "/etc/fonts"]
    return args


def python_roots() -> list[str]:
    """The folders the interpreter and its packages live in, outermost first, without duplicates."""
    roots: list[str] = []
    for candidate in sorted({sys.base_prefix, sys.prefix}, key=len):
        inside = [root for root in (*roots, "/usr") if candidate == root or candidate.startswith(root + os.sep)]
        if not inside:  # a folder under /usr, or under one already bound, is there already
            roots.append(candidate)
    return roots


def command(driver_source: str, limits: Limits, answer_fd: int) -> list[str]:
    """The bwrap command line that runs the driver, answering on `answer_fd` (an inherited descriptor: bwrap
    passes descriptors on as they are)."""
    bwrap = shutil.which("bwrap") or "bwrap"
    args = []
    user = sandbox_user()
    if user is not None:
        # util-linux's setpriv drops to the sandbox's user before bwrap starts (uvloop's subprocesses take no
        # user or group arguments, and a pre-exec hook is not safe in a process with threads).
        setpriv = shutil.which("setpriv") or "setpriv"
        args = [setpriv, f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups", "--"]
    args += [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    args += _system_mounts()
    # Memory file systems are bounded: what is written there is not counted against the memory limit.
    size = str(limits.folder_mb << 20)
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--size", size, "--tmpfs", "/dev/shm", "--size", size, "--tmpfs", "/tmp"]
    # After /tmp: an installation under /tmp (a venv in a fresh clone) is bound over the sandbox's own /tmp.
    for root in python_roots():
        args += ["--ro-bind", root, root]
    args += ["--size", size, "--tmpfs", WORK_FOLDER, "--chdir", WORK_FOLDER]
    args += ["--clearenv"]
    environment = {
        "HOME": "/tmp",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        # One thread per numeric library: the sandbox shares the machine with the engines.
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OASIS_ANSWER_FD": str(answer_fd),
        "OASIS_SANDBOX_PROCESSES": str(limits.processes),
        "OASIS_SANDBOX_MEMORY": str(limits.memory_mb << 20),
        "OASIS_SANDBOX_CPU": str(limits.cpu_seconds),
        "OASIS_SANDBOX_FILE": str(limits.file_mb << 20),
    }
    for name, value in environment.items():
        args += ["--setenv", name, value]
    args += [sys.executable, "-I", "-u", "-c", driver_source]
    return args
