"""Transcripts in OpenAI's five response formats: json, text, srt, vtt, verbose_json."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from oasis.engines.speech import Segment, Transcript
from oasis.services.audio.languages import language_name

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


def _clock(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{decimal}{millis:03d}"


def to_srt(transcript: Transcript) -> str:
    return "".join(
        f"{index}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n\n"
        for index, s in enumerate(transcript.segments, start=1)
    )


def to_vtt(transcript: Transcript) -> str:
    cues = "".join(
        f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n\n" for s in transcript.segments
    )
    return "WEBVTT\n\n" + cues


def to_verbose(transcript: Transcript, task: str, granularities: set[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": task,
        # A translation's language is that of its output, always English (OpenAI's TranslationVerbose).
        "language": "english" if task == "translate" else language_name(transcript.language),
        "duration": transcript.duration,
        "text": transcript.text,
    }
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": s.id,
                "seek": s.seek,
                "start": s.start,
                "end": s.end,
                "text": s.text,
                "tokens": s.tokens,
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in transcript.segments
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end} for s in transcript.segments for w in s.words
        ]
    return body


def _usage(transcript: Transcript) -> dict[str, Any]:
    """What OpenAI's Whisper answers count: the audio's seconds."""
    return {"type": "duration", "seconds": round(transcript.duration, 3)}


def render(transcript: Transcript, response_format: str, task: str, granularities: set[str]) -> tuple[Any, str]:
    """The body (a dict for JSON, else text) and its content type."""
    if response_format == "text":
        return transcript.text + "\n", "text/plain; charset=utf-8"
    if response_format == "srt":
        return to_srt(transcript), "application/x-subrip; charset=utf-8"
    if response_format == "vtt":
        return to_vtt(transcript), "text/vtt; charset=utf-8"
    usage = {"usage": _usage(transcript)} if task == "transcribe" else {}  # a translation's answer has none
    if response_format == "verbose_json":
        return {**to_verbose(transcript, task, granularities), **usage}, "application/json"
    return {"text": transcript.text, **usage}, "application/json"


async def segment_events(segments: AsyncIterator[Segment]) -> AsyncIterator[dict[str, Any]]:
    """A streamed transcription's events: a `transcript.text.delta` a segment as each is decoded, whose deltas join
    into the text that `transcript.text.done` gives whole (the transcript's text: stripped, so the first delta's
    leading blank and each delta's trailing one wait for text after them)."""
    text = ""
    pending = ""  # blank space that counts only if more text follows
    async for segment in segments:
        piece = pending + segment.text if text else segment.text.lstrip()
        kept = piece.rstrip()
        pending = piece[len(kept) :]
        if kept:
            text += kept
            yield {"type": "transcript.text.delta", "delta": kept}
        elif not text:
            pending = ""
    # No usage here: the done event's is OpenAI's token count, which Whisper's answers do not carry.
    yield {"type": "transcript.text.done", "text": text}
