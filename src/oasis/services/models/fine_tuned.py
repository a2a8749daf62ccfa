"""Fine-tuned models (`ft:…`), served on demand: a project's fine-tune is found in its rows, its adapter merged
into a copy of its base model's GGUF (cached in the data dir, so a restart loads it again at once) and loaded as
an engine of the base's kind; beyond `max_loaded` the least recently used one is unloaded.

A fine-tune answers only inside its project: another project asking for the name gets the same 404 as for a
model that does not exist.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import shutil
import tarfile
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

from oasis.blobs import BlobStore
from oasis.engines.llamacpp.weights import gguf_path
from oasis.engines.registry import EngineRegistry
from oasis.errors import OasisError, not_found
from oasis.settings import ModelSpec
from oasis.storage import fine_tuning as job_rows
from oasis.storage import models as model_rows
from oasis.storage.db import Database

log = logging.getLogger("oasis.models")

FINE_TUNED_PREFIX = "ft:"
RECHECK_SECONDS = 5.0


def _model_not_found(model: str) -> OasisError:
    return not_found(
        f"The model '{model}' does not exist or you do not have access to it.", param="model", code="model_not_found"
    )


async def read_blob(blobs: BlobStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in blobs.read(key)])


def unpack(archive: bytes, folder: Path) -> None:
    """A tar the trainer's checkpoint was packed into, unpacked; only plain files, by their base names."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                source = tar.extractfile(member)
                if source is not None:
                    (folder / Path(member.name).name).write_bytes(source.read())


def pack(folder: Path, names: tuple[str, ...] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(folder.iterdir()):
            if path.is_file() and (names is None or path.name in names):
                tar.add(path, arcname=path.name)
    return buffer.getvalue()


class FineTunedModels:
    def __init__(
        self, db: Database, blobs: BlobStore, registry: EngineRegistry, cache_dir: Path, max_loaded: int
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._registry = registry
        self._cache_dir = cache_dir
        self._max_loaded = max_loaded
        self._loaded: OrderedDict[str, str] = OrderedDict()  # model name -> its project
        self._locks: dict[str, asyncio.Lock] = {}
        self._merging: dict[Path, asyncio.Lock] = {}
        self._unloading: set[asyncio.Task[None]] = set()
        self._checked: dict[str, float] = {}  # model -> when its row was last seen

    async def ensure(self, project_id: str, model: str) -> None:
        """Makes `model` servable when it is one of the project's fine-tunes (or their checkpoints); a
        fine-tune of another project is not found; other names are left to the registry."""
        if not model.startswith(FINE_TUNED_PREFIX) or self._registry.configured(model):
            return
        if self._ready(project_id, model):
            await self._recheck(project_id, model)
            return
        lock = self._locks.setdefault(model, asyncio.Lock())
        try:
            async with lock:
                if not self._ready(project_id, model):  # else loaded by a request that held the lock before
                    await self._load(project_id, model)
        finally:
            if not lock.locked():
                self._locks.pop(model, None)

    async def _recheck(self, project_id: str, model: str) -> None:
        """A fine-tune deleted through another replica is unloaded here too (a 404), checked every few seconds."""
        if time.monotonic() - self._checked.get(model, 0.0) < RECHECK_SECONDS:
            return
        self._checked[model] = time.monotonic()
        try:
            await self._artifact(project_id, model)
        except OasisError:
            await self.forget(model, None, None)
            raise

    async def _load(self, project_id: str, model: str) -> None:
        adapter_key, base_model = await self._artifact(project_id, model)
        base = self._registry.resolve(base_model)
        if base is None:
            raise OasisError(
                503,
                f"The model '{model}' was fine-tuned from '{base_model}', which this server no longer serves.",
                type="server_error",
                code="model_not_available",
            )
        path = await self.merged_gguf(adapter_key, base)
        spec = ModelSpec(id=model, engine=base.engine, path=str(path), options=base.options, owned_by=project_id)
        await self._registry.add(spec, project_id)
        self._loaded[model] = project_id
        self._checked[model] = time.monotonic()
        while len(self._loaded) > self._max_loaded:
            evicted, _ = self._loaded.popitem(last=False)
            log.info("unloading fine-tuned model %s (least recently used)", evicted)
            self._unload(evicted)

    def _unload(self, model: str) -> None:
        """No new request finds the model; its engine closes in the background once the requests it serves end."""
        self._checked.pop(model, None)
        unloading = asyncio.create_task(self._registry.remove(model))
        self._unloading.add(unloading)
        unloading.add_done_callback(self._unloading.discard)

    def _ready(self, project_id: str, model: str) -> bool:
        owner = self._loaded.get(model)
        if owner is None:
            return False
        if owner != project_id:
            raise _model_not_found(model)
        self._loaded.move_to_end(model)
        return True

    async def _artifact(self, project_id: str, model: str) -> tuple[str, str]:
        """(the adapter's blob key, the base model) of a fine-tune or checkpoint the project owns."""
        async with self._db.session() as session:
            owned = await model_rows.get_model(session, project_id, model)
            if owned is not None and owned.artifact_blob_key and owned.base_model:
                return owned.artifact_blob_key, owned.base_model
            checkpoint = await job_rows.checkpoint_model(session, project_id, model)
            job = await job_rows.get_job(session, project_id, checkpoint.job_id) if checkpoint is not None else None
        if checkpoint is None or job is None:
            raise _model_not_found(model)
        return checkpoint.adapter_blob_key, job.base_model

    def cached_path(self, adapter_key: str, base: ModelSpec) -> Path:
        digest = hashlib.sha256(f"{base.id}\n{adapter_key}".encode()).hexdigest()[:24]
        return self._cache_dir / f"{digest}.gguf"

    async def merged_gguf(self, adapter_key: str, base: ModelSpec) -> Path:
        """The base model's GGUF with the adapter merged in, made once per (base, adapter) on this host."""
        target = self.cached_path(adapter_key, base)
        async with self._merging.setdefault(target, asyncio.Lock()):  # a fine-tune and its last checkpoint share one
            if target.exists():
                return target
            await self._merge(adapter_key, base, target)
        return target

    async def _merge(self, adapter_key: str, base: ModelSpec, target: Path) -> None:
        # gguf-py comes with the engines (the `all` extra), as does llama.cpp that serves the result
        from oasis.engines.training.gguf_merge import merge_adapter

        archive = await read_blob(self._blobs, adapter_key)
        self._cache_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="adapter-", dir=self._cache_dir))
        try:
            await asyncio.to_thread(unpack, archive, folder)
            await asyncio.to_thread(merge_adapter, gguf_path(base), folder, target)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def forget(self, model: str, adapter_key: str | None, base_model: str | None) -> None:
        """A deleted fine-tune: unloaded, and its merged GGUF removed from this host's cache."""
        if self._loaded.pop(model, None) is not None:
            self._unload(model)
        base = self._registry.resolve(base_model) if base_model else None
        if adapter_key and base is not None:
            self.cached_path(adapter_key, base).unlink(missing_ok=True)
