"""The HTTP server `oasis serve` runs: uvicorn's, ticking once a second, stopped at once by a signal."""

from __future__ import annotations

import email.utils
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.server_process import free_port

# A plain ASGI app behind the same server `oasis serve` uses; the tick is decades long unless the test asks for the
# real one, so a signal that did not wake the loop would leave the process running past the test's wait.
_SCRIPT = """
import sys
from oasis.http_server import QuietServer, serve

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})

QuietServer.tick_seconds = float(sys.argv[2])
sys.exit(serve(app, host="127.0.0.1", port=int(sys.argv[1])))
"""


def _start(tick_seconds: float) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, str(port), str(tick_seconds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base, timeout=2)
            return process, base
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the server did not start:\n{process.communicate()[0]}") from None
            time.sleep(0.05)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stopping_signal_ends_the_server_without_waiting_for_its_tick(stop: signal.Signals) -> None:
    process, base = _start(tick_seconds=1e9)
    try:
        assert httpx.get(base).text == "ok"
        process.send_signal(stop)
        process.wait(timeout=20)  # a tick decades long would not end before this
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read() if process.stdout else ""
    assert "Traceback" not in output
    if stop == signal.SIGINT:
        assert process.returncode == 0, output  # Ctrl-C is a normal way to stop it


def test_the_date_header_follows_the_clock() -> None:
    process, base = _start(tick_seconds=1.0)
    try:
        first = email.utils.parsedate_to_datetime(httpx.get(base).headers["date"])
        assert abs(first.timestamp() - time.time()) < 5
        time.sleep(2.5)
        second = email.utils.parsedate_to_datetime(httpx.get(base).headers["date"])
        assert second.timestamp() - first.timestamp() >= 1
    finally:
        process.terminate()
        process.wait(timeout=20)
