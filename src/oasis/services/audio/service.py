"""Audio: transcriptions and translations (speech to text), and speech (text to speech, streamed)."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

from oasis.engines.registry import EngineRegistry
from oasis.engines.speech import (
    AudioTooLong,
    SpeechEngine,
    Task,
    Transcript,
    TranscriptionEngine,
    UnreadableAudio,
    VoiceActivity,
)
from oasis.errors import invalid_request, too_large
from oasis.services.audio.codecs import CONTENT_TYPES, SpeechEncoder
from oasis.services.audio.languages import LANGUAGES
from oasis.services.audio.transcripts import RESPONSE_FORMATS, render, segment_events
from oasis.services.models.engine_lookup import engine_for

MAX_AUDIO_BYTES = 25 * 1024 * 1024  # OpenAI's limit for transcription uploads
MAX_SPEECH_CHARACTERS = 4096
STREAM_FORMATS = ("audio", "sse")
AUDIO_ONLY_NAMES = ("tts-1", "tts-1-hd")  # the names for which OpenAI streams raw audio only
# OpenAI counts its speech models' tokens; a local voice spends none of them.
NO_SPEECH_TOKENS = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
AUDIO_EXTENSIONS = ("flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "oga", "opus", "wav", "webm")
GRANULARITIES = {"word", "segment"}


@dataclass(frozen=True)
class TranscriptionJob:
    model: str
    task: Task
    language: str | None
    prompt: str | None
    response_format: str
    temperature: float | None
    granularities: set[str]
    stream: bool = False  # transcript.text.delta events, then transcript.text.done
    voice_activity: VoiceActivity | None = None  # `chunking_strategy`: transcribe only where speech is heard


def voice_activity(strategy: str | dict[str, Any] | None) -> VoiceActivity | None:
    """A transcription's `chunking_strategy`: unset (the audio transcribed whole), `auto` (voice-activity
    detection with its defaults) or `{"type": "server_vad", "threshold", "silence_duration_ms",
    "prefix_padding_ms"}`, also as the JSON text of that object."""
    if strategy is None:
        return None
    if isinstance(strategy, str) and strategy.strip().startswith("{"):
        try:
            strategy = json.loads(strategy)
        except json.JSONDecodeError:
            raise invalid_request("'chunking_strategy' is not valid JSON.", param="chunking_strategy") from None
    if strategy == "auto":
        return VoiceActivity()
    if not isinstance(strategy, dict) or strategy.get("type") != "server_vad":
        raise invalid_request(
            "'chunking_strategy' must be 'auto' or an object with type 'server_vad'.", param="chunking_strategy"
        )
    unknown = set(strategy) - {"type", "threshold", "silence_duration_ms", "prefix_padding_ms"}
    if unknown:
        raise invalid_request(
            f"Unknown parameter: 'chunking_strategy.{sorted(unknown)[0]}'.", param="chunking_strategy"
        )
    defaults = VoiceActivity()
    try:
        threshold = float(strategy.get("threshold", defaults.threshold))
        silence = int(strategy.get("silence_duration_ms", defaults.silence_ms))
        padding = int(strategy.get("prefix_padding_ms", defaults.padding_ms))
    except (TypeError, ValueError):
        raise invalid_request(
            "'chunking_strategy' takes a number for threshold and whole milliseconds for silence_duration_ms and "
            "prefix_padding_ms.",
            param="chunking_strategy",
        ) from None
    if not 0 <= threshold <= 1:
        raise invalid_request("'chunking_strategy.threshold' must be between 0 and 1.", param="chunking_strategy")
    if silence < 0 or padding < 0:
        raise invalid_request("'chunking_strategy' durations must not be negative.", param="chunking_strategy")
    return VoiceActivity(threshold=threshold, silence_ms=silence, padding_ms=padding)


@dataclass(frozen=True)
class SpeechAudio:
    content_type: str
    chunks: AsyncGenerator[bytes, None]


class AudioService:
    def __init__(self, registry: EngineRegistry) -> None:
        self._registry = registry

    def check_transcription(self, job: TranscriptionJob) -> None:
        if job.response_format not in RESPONSE_FORMATS:
            raise invalid_request(
                f"'{job.response_format}' is not one of {', '.join(RESPONSE_FORMATS)} - 'response_format'",
                param="response_format",
            )
        if job.language is not None and job.language not in LANGUAGES:
            raise invalid_request(f"'{job.language}' is not a supported ISO-639-1 language code.", param="language")
        if job.temperature is not None and not 0 <= job.temperature <= 1:
            raise invalid_request("'temperature' must be between 0 and 1.", param="temperature")
        unknown = job.granularities - GRANULARITIES
        if unknown:
            raise invalid_request(
                f"'timestamp_granularities' takes word and segment, not {sorted(unknown)}.",
                param="timestamp_granularities",
            )
        if job.granularities and job.response_format != "verbose_json":
            raise invalid_request(
                "'timestamp_granularities' needs response_format 'verbose_json'.", param="timestamp_granularities"
            )
        if job.stream and job.response_format not in ("json", "text"):
            raise invalid_request(
                "A streamed transcription answers text events: give response_format 'json' or 'text'.",
                param="response_format",
            )
        engine_for(self._registry, job.model, TranscriptionEngine, "transcription")

    async def transcribe(self, job: TranscriptionJob, audio: BinaryIO, size: int, filename: str) -> tuple[Any, str]:
        """The rendered transcript and its content type."""
        transcript = await self.transcript(job, audio, size, filename)
        return render(transcript, job.response_format, job.task, job.granularities)

    async def transcript(self, job: TranscriptionJob, audio: BinaryIO, size: int, filename: str) -> Transcript:
        engine = self._transcriber(job, size, filename)
        with _audio_errors():
            return await engine.transcribe(
                audio,
                task=job.task,
                language=job.language,
                prompt=job.prompt,
                temperature=job.temperature,
                word_timestamps="word" in job.granularities,
                voice_activity=job.voice_activity,
            )

    async def text_events(
        self, job: TranscriptionJob, audio: BinaryIO, size: int, filename: str
    ) -> AsyncIterator[dict[str, Any]]:
        """A streamed transcription's events as Whisper decodes each segment (checked before the first is sent)."""
        engine = self._transcriber(job, size, filename)
        segments = engine.transcribe_segments(
            audio,
            task=job.task,
            language=job.language,
            prompt=job.prompt,
            temperature=job.temperature,
            voice_activity=job.voice_activity,
        )
        try:
            with _audio_errors():
                async for event in segment_events(segments):
                    yield event
        finally:
            await segments.aclose()

    def _transcriber(self, job: TranscriptionJob, size: int, filename: str) -> TranscriptionEngine:
        """The job's engine, once the job and its file are checked."""
        self.check_transcription(job)
        if size == 0:
            raise invalid_request("The audio file is empty.", param="file")
        if size > MAX_AUDIO_BYTES:
            raise too_large(
                f"The audio file is {size} bytes; the limit is {MAX_AUDIO_BYTES} bytes (25 MB).", param="file"
            )
        extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
        if extension and extension not in AUDIO_EXTENSIONS:
            raise invalid_request(
                f"Invalid file format. Supported formats: {list(AUDIO_EXTENSIONS)}",
                param="file",
                code="invalid_file_format",
            )
        engine: TranscriptionEngine = engine_for(self._registry, job.model, TranscriptionEngine, "transcription")
        return engine

    def speech(
        self, *, model: str, text: str, voice: str, response_format: str, speed: float, stream_format: str = "audio"
    ) -> SpeechAudio:
        """Checks the request now (so errors keep their status) and returns audio that streams as it is made."""
        engine: SpeechEngine = engine_for(self._registry, model, SpeechEngine, "speech")
        if stream_format not in STREAM_FORMATS:
            raise invalid_request(
                f"'{stream_format}' is not one of {', '.join(STREAM_FORMATS)} - 'stream_format'", param="stream_format"
            )
        if stream_format == "sse" and model in AUDIO_ONLY_NAMES:
            raise invalid_request(  # OpenAI's rule for these names
                f"'stream_format' 'sse' is not supported for {model}: ask for 'audio', or name gpt-4o-mini-tts.",
                param="stream_format",
            )
        if not text.strip():
            raise invalid_request("'input' must not be empty.", param="input")
        if len(text) > MAX_SPEECH_CHARACTERS:
            raise invalid_request(
                f"'input' is {len(text)} characters; the limit is {MAX_SPEECH_CHARACTERS}.", param="input"
            )
        if voice not in engine.voices():
            raise invalid_request(f"'{voice}' is not one of {', '.join(engine.voices())} - 'voice'", param="voice")
        if response_format not in CONTENT_TYPES:
            raise invalid_request(
                f"'{response_format}' is not one of {', '.join(CONTENT_TYPES)} - 'response_format'",
                param="response_format",
            )
        if not 0.25 <= speed <= 4.0:
            raise invalid_request("'speed' must be between 0.25 and 4.0.", param="speed")
        return SpeechAudio(CONTENT_TYPES[response_format], encoded_speech(engine, text, voice, speed, response_format))


async def speech_events(chunks: AsyncGenerator[bytes, None]) -> AsyncIterator[dict[str, Any]]:
    """`stream_format: "sse"`: a `speech.audio.delta` event for each piece of the encoded audio (base64), as it is
    made, then `speech.audio.done`."""
    async with contextlib.aclosing(chunks):  # a client gone mid-way stops the synthesis now, not when collected
        async for data in chunks:
            yield {"type": "speech.audio.delta", "audio": base64.b64encode(data).decode("ascii")}
    yield {"type": "speech.audio.done", "usage": dict(NO_SPEECH_TOKENS)}


async def encoded_speech(
    engine: SpeechEngine, text: str, voice: str, speed: float, response_format: str
) -> AsyncGenerator[bytes, None]:
    """`text` spoken and encoded in `response_format`, a piece at a time as it is made."""
    encoder = SpeechEncoder(response_format, engine.sample_rate)
    async for samples in engine.synthesize(text, voice=voice, speed=speed):
        data = encoder.encode(samples)
        if data:
            yield data
    tail = encoder.finish()
    if tail:
        yield tail


@contextmanager
def _audio_errors() -> Iterator[None]:
    """The engine's refusals of a file, as OpenAI-shaped errors."""
    try:
        yield
    except AudioTooLong as exc:
        limit = exc.limit_seconds
        raise invalid_request(
            f"The audio is longer than this server transcribes ({limit / 60:g} minutes, the model's "
            "`max_audio_seconds`). Split it into shorter files.",
            param="file",
            code="audio_too_long",
        ) from None
    except UnreadableAudio:
        raise invalid_request(
            "The file could not be decoded as audio. Supported formats: " + ", ".join(AUDIO_EXTENSIONS) + ".",
            param="file",
            code="invalid_file_format",
        ) from None
