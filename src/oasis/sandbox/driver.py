"""The program that runs inside the sandbox: a Python session that executes one piece of code per request, keeping
its variables between requests, like a notebook kernel.

It is run with `python -I -c` (its source, not an import: nothing of oasis is visible inside). Requests come as
JSON lines on stdin (`{"code": ..., "files": {name: base64}}`: files to place in /mnt/data first); each answer is
one JSON line on the file descriptor named by `OASIS_ANSWER_FD`: `{"logs", "error", "images", "files"}`, the
files being those the code wrote or changed in /mnt/data. The code's own stdout and stderr, at the
file-descriptor level (so C extensions and child processes are caught too), go to a capture file that is read
back after each request. It uses only the standard library until the code imports more.
"""

import ast
import base64
import contextlib
import io
import json
import os
import resource
import sys
import traceback

MAX_LOG_CHARS = 20_000
MAX_IMAGES = 8
MAX_FILES = 20
MAX_FILE_BYTES = 32 << 20  # returned files, in all
WORK_FOLDER = "/mnt/data"


def _snapshot() -> dict[str, tuple[int, int]]:
    found = {}
    for folder, _, names in os.walk(WORK_FOLDER):
        for name in names:
            path = os.path.join(folder, name)
            try:
                stat = os.lstat(path)
            except OSError:
                continue
            if os.path.isfile(path) and not os.path.islink(path):
                found[os.path.relpath(path, WORK_FOLDER)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _place(files: dict[str, str]) -> None:
    for name, data in files.items():
        # A name under /mnt/data, its folders kept (a file the code wrote in one goes back there); never above it.
        relative = os.path.normpath(name)
        if os.path.isabs(relative) or relative.split(os.sep)[0] in ("..", "."):
            relative = os.path.basename(name)
        path = os.path.join(WORK_FOLDER, relative)
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(base64.b64decode(data))
        except (OSError, ValueError) as exc:  # over the size or the folder's room, or a bad name: placed without it
            print(f"[{name} could not be placed in {WORK_FOLDER}: {getattr(exc, 'strerror', None) or exc}]")
            with contextlib.suppress(OSError, ValueError):
                os.unlink(path)


def _changed(before: dict[str, tuple[int, int]]) -> tuple[dict[str, str], list[str]]:
    """(files written or changed since `before`, names of those too many or too large to return)."""
    changed: dict[str, str] = {}
    left: list[str] = []
    budget = MAX_FILE_BYTES
    for name, seen in sorted(_snapshot().items()):
        if before.get(name) == seen:
            continue
        if len(changed) >= MAX_FILES or seen[0] > budget:
            left.append(name)
            continue
        with open(os.path.join(WORK_FOLDER, name), "rb") as handle:
            changed[name] = base64.b64encode(handle.read()).decode("ascii")
        budget -= seen[0]
    return changed, left


def _limit() -> None:
    """Limits for everything the code does, set before it runs; soft and hard alike, so it cannot raise them."""
    limits = {
        # Set here, inside the sandbox's own user namespace, the process limit counts this sandbox's alone (on
        # Linux 5.14 and later; before, it counts every process of the user the sandbox runs as).
        resource.RLIMIT_NPROC: "OASIS_SANDBOX_PROCESSES",
        resource.RLIMIT_AS: "OASIS_SANDBOX_MEMORY",
        resource.RLIMIT_CPU: "OASIS_SANDBOX_CPU",
        resource.RLIMIT_FSIZE: "OASIS_SANDBOX_FILE",
    }
    for kind, name in limits.items():
        value = int(os.environ[name])
        resource.setrlimit(kind, (value, value))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core dumps handed to the host's handler
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def _figures() -> list[str]:
    """Figures the code left open, as base64 PNGs; they are closed, so each is shown once."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return []
    images = []
    for number in pyplot.get_fignums()[:MAX_IMAGES]:
        buffer = io.BytesIO()
        pyplot.figure(number).savefig(buffer, format="png")
        images.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    pyplot.close("all")
    return images


def _execute(code: str, namespace: dict[str, object]) -> None:
    """Runs the code; a last line that is an expression has its value shown, as in a notebook."""
    tree = ast.parse(code, "<code>")
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        tree.body.pop()
    else:
        last = None
    exec(compile(tree, "<code>", "exec"), namespace)  # running the code is this program's purpose
    if last is not None:
        value = eval(compile(ast.Expression(last.value), "<code>", "eval"), namespace)
        if value is not None:
            print(repr(value))


# Streams replaced after output ran past the limit, kept so that they are never collected: closing one would try
# to write what it still holds, into the next call's output.
_abandoned: list[object] = []


def _fresh_streams() -> tuple[io.TextIOWrapper, io.TextIOWrapper]:
    _abandoned.extend(stream for stream in (sys.stdout, sys.stderr) if isinstance(stream, io.TextIOWrapper))
    out = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding="utf-8", line_buffering=True)
    err = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), encoding="utf-8", line_buffering=True)
    return out, err


def main() -> None:
    answers = os.fdopen(int(os.environ.pop("OASIS_ANSWER_FD")), "w", encoding="utf-8")
    _limit()
    # In memory, not in /tmp: code that fills /tmp must not leave the driver unable to report it.
    capture = os.fdopen(os.memfd_create("output"), "w+b")
    os.dup2(capture.fileno(), 1)
    os.dup2(capture.fileno(), 2)
    sys.stdout, sys.stderr = _fresh_streams()
    namespace: dict[str, object] = {"__name__": "__main__"}
    os.chdir(WORK_FOLDER)
    for line in sys.stdin:
        request = json.loads(line)
        error = None
        _place(request.get("files") or {})
        before = _snapshot()
        try:
            _execute(request["code"], namespace)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt are the code's errors too
            error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            # The output is a file under the file size limit too: code that printed it full (EFBIG) must get
            # its error back, not end the session by failing to print the traceback.
            with contextlib.suppress(OSError):
                print(traceback.format_exc(), file=sys.stderr)
        try:
            images = _figures()
            files, left = _changed(before)
            if left:
                print(f"[not returned: {', '.join(left)} (at most {MAX_FILES} files, {MAX_FILE_BYTES >> 20} MB)]")
        except Exception as exc:
            images, files = [], {}
            error = error or f"Could not collect the outputs: {exc}"
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # output past the limit: what fitted is sent, and what waits to be written goes
            sys.stdout, sys.stderr = _fresh_streams()
        capture.seek(0)
        logs = capture.read().decode("utf-8", "replace")
        capture.seek(0)
        capture.truncate()
        if len(logs) > MAX_LOG_CHARS:
            logs = logs[: MAX_LOG_CHARS // 2] + "\n[... output cut ...]\n" + logs[-MAX_LOG_CHARS // 2 :]
        answers.write(json.dumps({"logs": logs, "error": error, "images": images, "files": files}) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
