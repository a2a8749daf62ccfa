"""Transcription and translation with faster-whisper (CTranslate2 Whisper models), off the event loop.

Options: `compute_type` (int8), `cpu_threads` (all cores), `workers` (concurrent transcriptions, 1),
`part_packages` (packages whose `data/model.bin.partN` files join into model.bin, in order).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import importlib.util
import os
import shutil
import threading
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import platformdirs

from oasis.engines.options import WhisperOptions
from oasis.engines.speech import AudioTooLong, Segment, Task, Transcript, UnreadableAudio, VoiceActivity, Word
from oasis.settings import ModelSpec


def _package_dir(name: str) -> Path:
    found = importlib.util.find_spec(name)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed")
    return Path(next(iter(found.submodule_search_locations)))


def model_dir(spec: ModelSpec) -> Path:
    """A CTranslate2 model folder: the configured path, or one assembled once from weight packages."""
    if spec.path:
        return Path(spec.path).expanduser()
    if not spec.package:
        raise ValueError(f"model {spec.id}: give `path` or `package` for its weights")
    first = _package_dir(spec.package) / "data"
    if (first / "model.bin").exists():
        return first
    parts = [first / "model.bin.part1"] + [
        _package_dir(name) / "data" / f"model.bin.part{index}"
        for index, name in enumerate(WhisperOptions.model_validate(spec.options).part_packages, start=2)
    ]
    missing = [str(part) for part in parts if not part.exists()]
    if missing:
        raise FileNotFoundError(f"model {spec.id}: missing weight parts {missing}")
    key = hashlib.sha256("|".join(f"{p}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:16]
    target = Path(platformdirs.user_cache_dir("oasis")) / "models" / f"{spec.id}-{key}"
    if not (target / "model.bin").exists():
        _assemble(first, parts, target)
    return target


def _assemble(first: Path, parts: list[Path], target: Path) -> None:
    staging = target.with_name(target.name + f".partial-{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=True)
    for extra in first.iterdir():
        if not extra.name.startswith("model.bin"):
            shutil.copy2(extra, staging / extra.name)
    with (staging / "model.bin").open("wb") as joined:
        for part in parts:
            with part.open("rb") as chunk:
                shutil.copyfileobj(chunk, joined, 1 << 22)
    # Rename last, so a half-written folder is never taken for a model.
    if not (target / "model.bin").exists():
        staging.replace(target)
    else:
        shutil.rmtree(staging, ignore_errors=True)


class WhisperEngine:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._options = WhisperOptions.model_validate(spec.options)
        self._model: Any = None
        self._pool = ThreadPoolExecutor(max_workers=self._options.workers, thread_name_prefix="whisper")

    async def start(self) -> None:
        self._model = await asyncio.get_running_loop().run_in_executor(self._pool, self._load)

    def _load(self) -> Any:
        from faster_whisper import WhisperModel

        return WhisperModel(
            str(model_dir(self.spec)),
            device="cpu",
            compute_type=self._options.compute_type,
            cpu_threads=self._options.cpu_threads,
            local_files_only=True,
        )

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def transcribe(
        self,
        audio: BinaryIO,
        *,
        task: Task,
        language: str | None,
        prompt: str | None,
        temperature: float | None,
        word_timestamps: bool,
        voice_activity: VoiceActivity | None = None,
    ) -> Transcript:
        def run() -> Transcript:
            with _read_errors():
                segments, info = self._begin(
                    audio, task, language, prompt, temperature, word_timestamps, voice_activity
                )
                found = [_segment(s) for s in segments]
            return Transcript(language=info.language, duration=float(info.duration), segments=found)

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def transcribe_segments(
        self,
        audio: BinaryIO,
        *,
        task: Task,
        language: str | None,
        prompt: str | None,
        temperature: float | None,
        voice_activity: VoiceActivity | None = None,
    ) -> AsyncGenerator[Segment, None]:
        """Each segment as Whisper decodes it (faster-whisper's segments are a lazy generator). The audio is read
        whole before the first segment; a consumer that stops early stops the decoding at the next segment."""
        loop = asyncio.get_running_loop()
        found: asyncio.Queue[Segment | BaseException | None] = asyncio.Queue()
        stopped = threading.Event()

        def put(item: Segment | BaseException | None) -> None:
            loop.call_soon_threadsafe(found.put_nowait, item)

        def run() -> None:
            try:
                with _read_errors():
                    segments, _info = self._begin(audio, task, language, prompt, temperature, False, voice_activity)
                    for segment in segments:
                        if stopped.is_set():
                            return
                        put(_segment(segment))
            except BaseException as exc:  # handed to the consumer, raised there
                put(exc)
            finally:
                put(None)

        decoding = loop.run_in_executor(self._pool, run)
        try:
            while (item := await found.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stopped.set()
            await asyncio.shield(decoding)  # the thread ends at its next segment; the file stays open until then

    def _begin(
        self,
        audio: BinaryIO,
        task: Task,
        language: str | None,
        prompt: str | None,
        temperature: float | None,
        word_timestamps: bool,
        voice_activity: VoiceActivity | None,
    ) -> tuple[Iterator[Any], Any]:
        """The audio decoded, its language found, and faster-whisper's lazy segments with the transcription info."""
        # faster-whisper's default is a fallback ladder of temperatures; a given one pins it, as OpenAI.
        temperatures: Any = temperature or [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
        samples = _decode(audio, self._model.feature_extractor.sampling_rate, self._options.max_audio_seconds)
        detector: dict[str, Any] = {}
        if voice_activity is not None:  # Silero VAD, shipped in faster-whisper's wheel
            detector = {
                "vad_filter": True,
                "vad_parameters": {
                    "threshold": voice_activity.threshold,
                    "min_silence_duration_ms": voice_activity.silence_ms,
                    "speech_pad_ms": voice_activity.padding_ms,
                },
            }
        segments, info = self._model.transcribe(
            samples,
            task=task,
            language=language,
            initial_prompt=prompt or None,
            temperature=temperatures,
            word_timestamps=word_timestamps,
            **detector,
        )
        return segments, info


@contextmanager
def _read_errors() -> Iterator[None]:
    """PyAV raises many types for a file it cannot read: those are UnreadableAudio."""
    try:
        yield
    except (AudioTooLong, UnreadableAudio):
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("av") or isinstance(exc, (IndexError, ValueError)):
            raise UnreadableAudio(str(exc)) from exc
        raise


_GROUP_SAMPLES = 500_000


def _decode(audio: BinaryIO, rate: int, limit_seconds: float) -> np.ndarray:
    """The audio as float32 mono samples at `rate`, as faster_whisper.decode_audio gives it, but decoding stops
    once it passes `limit_seconds`: a file's own header may claim any duration, so the samples are counted."""
    import av

    limit = int(limit_seconds * rate)
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=rate)
    fifo = av.audio.fifo.AudioFifo()  # frames resampled in large groups, as faster-whisper does: fewer calls
    parts: list[np.ndarray] = []
    count = 0

    def keep(group: Any, resampler: Any) -> None:
        nonlocal count
        for resampled in resampler.resample(group):
            part = resampled.to_ndarray().reshape(-1)
            count += len(part)
            if count > limit:
                parts.clear()  # the traceback keeps this frame alive while the error is answered
                raise AudioTooLong(limit_seconds)
            parts.append(part)

    with av.open(audio, mode="r", metadata_errors="ignore") as container:
        for frame in _valid_frames(container.decode(audio=0)):
            frame.pts = None  # a stream whose timestamps jump must not stop the FIFO
            fifo.write(frame)
            if fifo.samples >= _GROUP_SAMPLES:
                keep(fifo.read(), resampler)
        if fifo.samples:
            keep(fifo.read(), resampler)
        keep(None, resampler)  # flushes the resampler
    # As faster-whisper does: PyAV's resampler objects are freed only by a collection (faster-whisper#390).
    del resampler, fifo
    gc.collect()
    if not count:
        raise UnreadableAudio("the file holds no audio samples")
    return np.concatenate(parts).astype(np.float32) / 32768.0


def _valid_frames(frames: Iterator[Any]) -> Iterator[Any]:
    """Frames past a damaged one (faster-whisper skips those too)."""
    import av

    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue


def _segment(segment: Any) -> Segment:
    return Segment(
        id=int(segment.id) - 1,
        seek=int(segment.seek),
        start=float(segment.start),
        end=float(segment.end),
        text=segment.text,
        tokens=list(segment.tokens),
        temperature=float(segment.temperature or 0.0),
        avg_logprob=float(segment.avg_logprob),
        compression_ratio=float(segment.compression_ratio),
        no_speech_prob=float(segment.no_speech_prob),
        words=[Word(w.word, float(w.start), float(w.end), float(w.probability)) for w in segment.words or []],
    )
