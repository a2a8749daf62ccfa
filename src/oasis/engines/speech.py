"""Speech capabilities: transcription (speech to text) and synthesis (text to speech)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import BinaryIO, Literal, Protocol, runtime_checkable

import numpy as np

from oasis.engines.base import Engine

Task = Literal["transcribe", "translate"]


class UnreadableAudio(ValueError):
    """The upload is not audio the decoder understands (or holds no samples)."""


class AudioTooLong(ValueError):
    """The audio lasts longer than the engine transcribes (`limit_seconds`)."""

    def __init__(self, limit_seconds: float) -> None:
        super().__init__(f"the audio is longer than {limit_seconds:g} seconds")
        self.limit_seconds = limit_seconds


@dataclass(frozen=True)
class VoiceActivity:
    """Transcribe only the stretches a voice-activity detector hears speech in (OpenAI's `chunking_strategy`):
    silence and noise between them are skipped, and the timestamps stay those of the whole recording."""

    threshold: float = 0.5  # speech probability above which audio is speech
    silence_ms: int = 200  # silence that ends a stretch of speech
    padding_ms: int = 300  # audio kept before (and after) each stretch


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] = field(default_factory=list)


@dataclass(frozen=True)
class Transcript:
    language: str  # ISO 639-1 code, as the model detected or was told
    duration: float
    segments: list[Segment]

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self.segments).strip()


@runtime_checkable
class TranscriptionEngine(Engine, Protocol):
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
        """Raises UnreadableAudio when the file cannot be decoded, AudioTooLong past the engine's limit."""
        ...

    def transcribe_segments(
        self,
        audio: BinaryIO,
        *,
        task: Task,
        language: str | None,
        prompt: str | None,
        temperature: float | None,
        voice_activity: VoiceActivity | None = None,
    ) -> AsyncGenerator[Segment, None]:
        """The segments as they are decoded, for a streamed transcription; raises as `transcribe` does."""
        ...


@runtime_checkable
class SpeechEngine(Engine, Protocol):
    sample_rate: int

    def voices(self) -> list[str]: ...

    def synthesize(self, text: str, *, voice: str, speed: float) -> AsyncIterator[np.ndarray]:
        """Mono int16 samples at `sample_rate`, a sentence or so at a time, as soon as each is ready."""
        ...
