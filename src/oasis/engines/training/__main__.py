"""The trainer subprocess: `python -m oasis.engines.training JOB_DIR`.

Reads JOB_DIR/job.json, trains (lora.py) and writes its checkpoints under JOB_DIR. Stdout carries only the job's
events, one JSON object per line, flushed: started, step, checkpoint, done, or error (then exit code 2). Everything
else, this package's logs and whatever the libraries print, goes to stderr.

One process on one device (CUDA if torch sees it, else the CPU): `accelerate launch` or `torchrun` can wrap the
command, but each process would then train the whole job on its own; multi-process training is not implemented.

SIGTERM stops the run promptly: the loop stops at the next step boundary, and if the current step has not ended
within a second the default action ends the process. Checkpoints are written under a temporary name and renamed, so
a stop at any moment leaves only complete ones. Exit codes: 0 done, 2 bad input, 143 stopped by SIGTERM.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

EXIT_INVALID_INPUT = 2
EXIT_STOPPED = 128 + signal.SIGTERM
STOP_GRACE_SECONDS = 1.0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m oasis.engines.training JOB_DIR", file=sys.stderr)
        return EXIT_INVALID_INPUT
    job_dir = Path(argv[0]).resolve()
    events = _claim_stdout_for_events()
    stop = threading.Event()
    _stop_on_sigterm(stop)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    # Set before torch loads: the tokenizer's thread pool would compete with training for the same cores, and
    # cuBLAS needs a fixed workspace to give the same result on every run.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    from oasis.engines.training import lora  # imports torch: only after the environment above is in place

    job = lora.TrainingJob.from_file(job_dir / "job.json")
    try:
        finished = lora.train(job, job_dir, emit, stop)
    except lora.InvalidTrainingInputError as error:
        emit({"event": "error", "code": error.code, "message": error.message, "param": error.param})
        return EXIT_INVALID_INPUT
    return 0 if finished else EXIT_STOPPED


def _claim_stdout_for_events() -> TextIO:
    """Keep the real stdout for events and point file descriptor 1 (and sys.stdout) at stderr, so nothing a library
    prints, from Python or from C, can land between two event lines."""
    events_fd = os.dup(sys.stdout.fileno())
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return os.fdopen(events_fd, "w", encoding="utf-8")


def _stop_on_sigterm(stop: threading.Event) -> None:
    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()
        # A second SIGTERM, or this timer, ends the process at once if the current step is slow to finish.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        timer = threading.Timer(STOP_GRACE_SECONDS, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()

    signal.signal(signal.SIGTERM, on_sigterm)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
