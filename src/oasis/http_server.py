"""uvicorn's server, waking its event loop once a second rather than ten times.

uvicorn's main loop wakes every 100 ms to see whether it should stop, and at every tenth wake refreshes the Date
header. Each wake-up of a sleeping event loop costs about a quarter of a millisecond of CPU with cold caches, and on a
small machine that time is taken from the cores that decode tokens: an idle `oasis serve`'s main thread used 3.9 ms
of CPU a second, 1.4 with one tick a second (bench/RESULTS.md). Here the loop ticks once a second (the Date header is
still refreshed at each tick) and a stopping signal wakes it at once, so Ctrl-C and SIGTERM stop the server as
promptly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from types import FrameType
from typing import Any

import uvicorn

from oasis.wakeups import until_next_tick

# uvicorn's exit status when the server could not start (uvicorn.main.STARTUP_FAILURE)
STARTUP_FAILURE = 3


class QuietServer(uvicorn.Server):
    tick_seconds = 1.0

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._stop_requested: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        # uvicorn refreshes the Date header when the counter is a multiple of 10 (its ticks are 100 ms apart)
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until_next_tick(self.tick_seconds)):
                    await self._stop_requested.wait()
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            # A signal handler may run in the middle of the loop's own work: hand the wake-up over thread-safely.
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(stop_requested.set)


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port as uvicorn binds one (OSError when the port is taken or the address is not
    this machine's)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def serve(app: Any, *, host: str, port: int, sock: socket.socket | None = None) -> int:
    """Serves `app` until a signal stops it, as `uvicorn.run` would (on `sock` where given, bound already);
    returns the process's exit status."""
    server = QuietServer(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False))
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn raises Ctrl-C again once it has shut down
        server.run(sockets=[sock] if sock is not None else None)
    return 0 if server.started else STARTUP_FAILURE
