"""Text to speech with Piper voices (ONNX), sentence by sentence, off the event loop.

A Piper voice file usually holds one speaker, so OpenAI's voice names map to distinct synthesis settings
(pace and how much the voice varies); a multi-speaker voice maps them to its first speakers instead.
Options: `workers` (concurrent syntheses, 2).
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oasis.engines.options import PiperOptions
from oasis.settings import ModelSpec


@dataclass(frozen=True)
class VoiceSetting:
    length_scale: float  # > 1 is slower
    noise_scale: float  # how much the voice varies
    noise_w_scale: float  # how much the timing varies


# The mapping is documented in the README; a different setting per name keeps the six voices apart.
VOICE_SETTINGS = {
    "alloy": VoiceSetting(1.00, 0.667, 0.80),
    "echo": VoiceSetting(1.05, 0.40, 0.60),
    "fable": VoiceSetting(0.97, 0.90, 1.00),
    "onyx": VoiceSetting(1.12, 0.50, 0.70),
    "nova": VoiceSetting(0.92, 0.75, 0.85),
    "shimmer": VoiceSetting(1.00, 0.85, 0.50),
}
# Names OpenAI added later; each borrows a setting above.
VOICE_SETTINGS |= {
    "ash": VOICE_SETTINGS["onyx"],
    "ballad": VOICE_SETTINGS["fable"],
    "coral": VOICE_SETTINGS["nova"],
    "sage": VOICE_SETTINGS["echo"],
    "verse": VOICE_SETTINGS["shimmer"],
}


def voice_files(spec: ModelSpec) -> tuple[Path, Path]:
    if spec.path:
        model = Path(spec.path).expanduser()
    elif spec.package:
        found = importlib.util.find_spec(spec.package)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"model {spec.id}: package {spec.package!r} is not installed")
        candidates = sorted(Path(next(iter(found.submodule_search_locations))).rglob("*.onnx"))
        if len(candidates) != 1:
            raise FileNotFoundError(f"model {spec.id}: expected one .onnx voice in {spec.package}")
        model = candidates[0]
    else:
        raise ValueError(f"model {spec.id}: give `path` or `package` for its voice")
    return model, model.with_name(model.name + ".json")


class PiperEngine:
    sample_rate = 22050

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._voice: Any = None
        workers = PiperOptions.model_validate(spec.options).workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="piper")

    async def start(self) -> None:
        self._voice = await asyncio.get_running_loop().run_in_executor(self._pool, self._load)
        self.sample_rate = int(self._voice.config.sample_rate)

    def _load(self) -> Any:
        from piper import PiperVoice

        model, config = voice_files(self.spec)
        return PiperVoice.load(str(model), config_path=str(config))

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def voices(self) -> list[str]:
        return list(VOICE_SETTINGS)

    def _config(self, voice: str, speed: float) -> Any:
        from piper import SynthesisConfig

        setting = VOICE_SETTINGS[voice]
        speakers = int(self._voice.config.num_speakers or 1)
        speaker = list(VOICE_SETTINGS).index(voice) % speakers if speakers > 1 else None
        return SynthesisConfig(
            speaker_id=speaker,
            length_scale=setting.length_scale / speed,
            noise_scale=setting.noise_scale,
            noise_w_scale=setting.noise_w_scale,
        )

    async def synthesize(self, text: str, *, voice: str, speed: float) -> AsyncIterator[np.ndarray]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[np.ndarray | BaseException | None] = asyncio.Queue()
        stopped = False

        def run() -> None:
            try:
                for chunk in self._voice.synthesize(text, self._config(voice, speed)):
                    if stopped:
                        return  # the client left: stop at the next sentence
                    loop.call_soon_threadsafe(queue.put_nowait, np.asarray(chunk.audio_int16_array))
            except BaseException as exc:
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        work = loop.run_in_executor(self._pool, run)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stopped = True
            await asyncio.shield(work)
