"""Streaming encoders for speech: mp3, opus (Ogg), aac (ADTS), flac, wav and raw pcm, all at OpenAI's 24 kHz.

Each `encode` call returns the bytes that are final so far, so the response can be sent while the rest of
the text is still being spoken.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, cast

import numpy as np

if TYPE_CHECKING:
    import av  # PyAV comes with the speech engines (the `all` extra); a server without them never loads it

OUTPUT_RATE = 24_000  # OpenAI's speech is 24 kHz mono; `pcm` is documented as exactly that

CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
_CONTAINERS = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
}


class _Sink:
    """A write-only file for PyAV: it keeps what the muxer wrote until the encoder takes it."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def _wav_header() -> bytes:
    # Sizes unknown while streaming: 0xFFFFFFFF, which players and decoders read as "until the end".
    return (
        b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, OUTPUT_RATE, OUTPUT_RATE * 2, 2, 16)
        + b"data" + struct.pack("<I", 0xFFFFFFFF)
    )  # fmt: skip


class SpeechEncoder:
    def __init__(self, response_format: str, source_rate: int) -> None:
        self.format = response_format
        self._source_rate = source_rate
        self._started = False
        self._sink = _Sink()
        import av

        self._container: av.container.OutputContainer | None = None
        target_format = "s16"
        if response_format in _CONTAINERS:
            container_format, codec = _CONTAINERS[response_format]
            self._container = av.open(self._sink, mode="w", format=container_format)
            self._stream = cast(av.AudioStream, self._container.add_stream(codec, rate=OUTPUT_RATE, layout="mono"))
            target_format = self._stream.format.name
        self._resampler = av.AudioResampler(format=target_format, layout="mono", rate=OUTPUT_RATE)

    def _frames(self, samples: np.ndarray | None) -> list[av.AudioFrame]:
        if samples is None:
            return list(self._resampler.resample(None))
        import av

        frame = av.AudioFrame.from_ndarray(samples.astype(np.int16).reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self._source_rate
        return list(self._resampler.resample(frame))

    def _emit(self, frames: list[av.AudioFrame], flush: bool) -> bytes:
        if self._container is None:
            raw = b"".join(frame.to_ndarray().astype("<i2").tobytes() for frame in frames)
            if self.format == "wav" and not self._started:
                raw = _wav_header() + raw
            self._started = True
            return raw
        for frame in frames:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        if flush:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
        return self._sink.take()

    def encode(self, samples: np.ndarray) -> bytes:
        return self._emit(self._frames(samples), flush=False)

    def finish(self) -> bytes:
        return self._emit(self._frames(None), flush=True)
