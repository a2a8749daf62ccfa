"""Spoken chat answers (`modalities: ["text", "audio"]`, after the 2.0.0 spec), for local text models: the model
answers in text, the speech model (`chat.speech_model`, tts-1) speaks it in the asked voice and format, and the
message carries `audio` (`id`, `data`, `expires_at`, `transcript`) instead of `content`, as OpenAI's audio models
answer. The transcript is kept until the answer expires, so that a later request may name the answer by its id
alone (`{"role": "assistant", "audio": {"id": ...}}`): the model then reads what it said.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from oasis.engines.registry import EngineRegistry
from oasis.engines.speech import SpeechEngine
from oasis.errors import invalid_request
from oasis.protocol.extensions import AssistantMessage, ChatCompletionRequest
from oasis.services.audio.service import encoded_speech
from oasis.services.models.engine_lookup import helper_engine
from oasis.storage import spoken_answers
from oasis.storage.clock import new_id, now
from oasis.storage.db import Database

# The formats a chat answer is spoken in, and the speech encoder's name for each.
ANSWER_FORMATS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "opus": "opus", "aac": "aac", "pcm16": "pcm"}
MODALITIES = ("text", "audio")


@dataclass(frozen=True)
class AnswerVoice:
    """How a request's answer is spoken."""

    engine: SpeechEngine
    voice: str
    encoding: str  # the speech encoder's name for the asked format


@dataclass(frozen=True)
class SpokenAnswer:
    id: str
    expires_at: int


class SpokenAnswers:
    def __init__(self, db: Database, registry: EngineRegistry, speech_model: str, lifetime_seconds: int) -> None:
        self._db = db
        self._registry = registry
        self._speech_model = speech_model
        self._lifetime_seconds = lifetime_seconds

    def voice_for(self, request: ChatCompletionRequest) -> AnswerVoice | None:
        """The voice a local model's answer is spoken in, or None for a text answer; a 400 for what cannot be
        spoken, before any work."""
        modalities = request.modalities or ["text"]
        unknown = [modality for modality in modalities if modality not in MODALITIES]
        if unknown:
            raise invalid_request(f"'{unknown[0]}' is not one of {list(MODALITIES)} - 'modalities'", param="modalities")
        if "audio" not in modalities:
            return None
        if request.audio is None:
            raise invalid_request(
                "'audio' (the voice and format) is required when 'modalities' holds 'audio'.", param="audio"
            )
        encoding = ANSWER_FORMATS.get(request.audio.format)
        if encoding is None:
            raise invalid_request(
                f"'{request.audio.format}' is not one of {list(ANSWER_FORMATS)} - 'audio.format'",
                param="audio.format",
            )
        engine: SpeechEngine = helper_engine(
            self._registry,
            self._speech_model,
            SpeechEngine,
            "speech",
            why=f"This model answers in text, spoken by the speech model '{self._speech_model}' (`chat.speech_model`)",
            param="modalities",
            code="audio_output_unsupported",
        )
        voice = request.audio.voice_name
        if voice not in engine.voices():
            raise invalid_request(
                f"'{voice}' is not one of {', '.join(engine.voices())} - 'audio.voice'", param="audio.voice"
            )
        return AnswerVoice(engine, voice, encoding)

    def speech(self, voice: AnswerVoice, transcript: str) -> AsyncGenerator[bytes, None]:
        """The transcript spoken, a piece at a time as it is made (nothing for an empty one)."""
        if not transcript.strip():
            return _nothing()
        return encoded_speech(voice.engine, transcript, voice.voice, 1.0, voice.encoding)

    async def remember(self, project_id: str, transcript: str, answer_id: str | None = None) -> SpokenAnswer:
        """Keeps the transcript until the answer expires (and forgets those that have)."""
        answer = SpokenAnswer(answer_id or new_id("audio_"), now() + self._lifetime_seconds)
        async with self._db.session() as session:
            await spoken_answers.forget_expired(session, now())
            await spoken_answers.remember(session, answer.id, project_id, transcript, answer.expires_at)
            await session.commit()
        return answer

    async def spoken(self, voice: AnswerVoice, transcript: str, project_id: str) -> dict[str, Any]:
        """A message's `audio`: the whole answer spoken, base64."""
        async with contextlib.aclosing(self.speech(voice, transcript)) as pieces:  # a client gone stops it
            data = b"".join([piece async for piece in pieces])
        answer = await self.remember(project_id, transcript)
        return {
            "id": answer.id,
            "data": base64.b64encode(data).decode("ascii"),
            "expires_at": answer.expires_at,
            "transcript": transcript,
        }

    async def with_transcripts(self, request: ChatCompletionRequest, project_id: str) -> ChatCompletionRequest:
        """Earlier spoken answers named by id, as the text they said (for a local text model)."""
        named = [
            (index, message.audio.id)
            for index, message in enumerate(request.messages)
            if isinstance(message, AssistantMessage) and message.audio is not None
        ]
        if not named:
            return request
        async with self._db.session() as session:
            known = await spoken_answers.transcripts(session, project_id, [answer for _, answer in named], now())
        messages = list(request.messages)
        for index, answer_id in named:
            message = messages[index]
            if answer_id not in known and message.content:
                continue  # the client sent what was said too: that is read
            if answer_id not in known:
                raise invalid_request(
                    f"The audio '{answer_id}' does not exist or has expired: send what it said as the message's "
                    "content instead.",
                    param=f"messages[{index}].audio.id",
                )
            if not message.content:
                messages[index] = message.model_copy(update={"content": known[answer_id]})
        return request.model_copy(update={"messages": messages})


async def _nothing() -> AsyncGenerator[bytes, None]:
    return
    yield
