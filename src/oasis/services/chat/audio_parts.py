"""Audio content parts for a local text model: `{"type": "input_audio", "input_audio": {"data": <base64>, "format":
"wav"}}` becomes what a transcription model hears in it, as a text part in the message where the part was, so that
a text model answers what was said (not how: tone and voices are lost). A model routed upstream receives the parts
as they were sent.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable

from oasis.engines.speech import AudioTooLong, TranscriptionEngine, UnreadableAudio
from oasis.errors import invalid_request
from oasis.protocol.extensions import ChatCompletionRequest, InputAudioPart
from oasis.services.chat.content_parts import has_parts, with_parts_as_text

# OpenAI's limit on a transcription upload, for the audio of one request here.
MAX_AUDIO_BYTES = 25 * 1024 * 1024


def has_audio_parts(request: ChatCompletionRequest) -> bool:
    return has_parts(request, InputAudioPart)


async def with_audio_heard(
    request: ChatCompletionRequest, transcriber_for: Callable[[str], TranscriptionEngine]
) -> ChatCompletionRequest:
    """The request with each audio part replaced by a text part holding its transcript. `transcriber_for(param)`:
    the transcription model, or a 400 on `param` (the first audio part's message content) when there is none."""
    transcriber: TranscriptionEngine | None = None
    budget = MAX_AUDIO_BYTES

    async def text_of(part: InputAudioPart, index: int, place: int) -> str:
        nonlocal transcriber, budget
        if transcriber is None:
            transcriber = transcriber_for(f"messages[{index}].content")
        param = f"messages[{index}].content[{place}].input_audio"
        audio = _audio_bytes(part, param, budget)
        budget -= len(audio)
        return f"[audio] {await _transcript(transcriber, audio, param)}"

    return await with_parts_as_text(request, InputAudioPart, text_of)


def _audio_bytes(part: InputAudioPart, param: str, budget: int) -> bytes:
    encoded = part.input_audio.get("data")
    if not isinstance(encoded, str) or not encoded:
        raise invalid_request("'data' must be the audio, base64-encoded.", param=f"{param}.data")
    if len(encoded) * 3 // 4 > budget:
        raise invalid_request(
            f"The audio of one request may hold up to {MAX_AUDIO_BYTES >> 20} MB.", param=f"{param}.data"
        )
    try:
        return base64.b64decode("".join(encoded.split()), validate=True)  # MIME-style line breaks allowed
    except (binascii.Error, ValueError):
        raise invalid_request("'data' must be the audio, base64-encoded.", param=f"{param}.data") from None


async def _transcript(transcriber: TranscriptionEngine, audio: bytes, param: str) -> str:
    try:
        transcript = await transcriber.transcribe(
            io.BytesIO(audio), task="transcribe", language=None, prompt=None, temperature=None, word_timestamps=False
        )
    except UnreadableAudio:
        raise invalid_request("The audio could not be decoded.", param=f"{param}.data", code="invalid_audio") from None
    except AudioTooLong as exc:
        raise invalid_request(
            f"The audio is longer than the transcription model hears ({exc.limit_seconds / 60:g} minutes).",
            param=f"{param}.data",
            code="audio_too_long",
        ) from None
    return transcript.text
