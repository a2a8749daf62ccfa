"""Audio: speech, transcriptions, translations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.datastructures import FormData, UploadFile

from oasis.api.deps import ContainerDep, PrincipalDep
from oasis.api.sse import typed_events_response
from oasis.engines.speech import Task
from oasis.errors import invalid_request
from oasis.protocol.extensions import SpeechRequest
from oasis.services.audio.service import TranscriptionJob, speech_events, voice_activity

router = APIRouter(tags=["Audio"])


@router.post("/audio/speech", response_class=StreamingResponse)
async def create_speech(body: SpeechRequest, container: ContainerDep, _principal: PrincipalDep) -> StreamingResponse:
    audio = container.audio.speech(
        model=body.model,
        text=body.input,
        voice=body.voice_name,
        response_format=body.response_format or "mp3",
        speed=1.0 if body.speed is None else body.speed,
        stream_format=body.stream_format,
    )
    if body.stream_format == "sse":
        return await typed_events_response(speech_events(audio.chunks))
    return StreamingResponse(audio.chunks, media_type=audio.content_type)


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_request(f"'{name}' must be a text field.", param=name)
    return value or None


def _job(form: FormData, task: Task) -> TranscriptionJob:
    model = _text(form, "model")
    if model is None:
        raise invalid_request("Missing required parameter: 'model'.", param="model")
    temperature_text = _text(form, "temperature")
    try:
        temperature = float(temperature_text) if temperature_text is not None else None
    except ValueError:
        raise invalid_request("'temperature' must be a number.", param="temperature") from None
    stream = (_text(form, "stream") or "false").lower() if task == "transcribe" else "false"
    if stream not in ("true", "false"):
        raise invalid_request("'stream' must be true or false.", param="stream")
    granularities = [g for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")]
    if not all(isinstance(g, str) for g in granularities):
        raise invalid_request("'timestamp_granularities' must be text.", param="timestamp_granularities")
    strategy: Any = _text(form, "chunking_strategy")
    nested = {
        key[len("chunking_strategy[") : -1]: form.get(key) for key in form if key.startswith("chunking_strategy[")
    }
    if nested:  # the SDKs send an object field by field: chunking_strategy[type], chunking_strategy[threshold], ...
        strategy = nested
    return TranscriptionJob(
        model=model,
        task=task,
        language=_text(form, "language") if task == "transcribe" else None,
        prompt=_text(form, "prompt"),
        response_format=_text(form, "response_format") or "json",
        temperature=temperature,
        granularities={str(g) for g in granularities},
        stream=stream == "true",
        voice_activity=voice_activity(strategy),
    )


async def _transcribe(request: Request, container: Any, task: Task) -> Response:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid_request("Send audio as multipart/form-data with the fields `file` and `model`.", param="file")
    async with request.form(max_files=1, max_fields=32) as form:
        job = _job(form, task)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise invalid_request("Missing required parameter: 'file' (send it as a file part).", param="file")
        arguments = (job, upload.file, upload.size or 0, upload.filename or "")
        if job.stream:  # a delta as each segment is decoded; the first awaited here, while the file is open
            return await typed_events_response(container.audio.text_events(*arguments))
        body, content_type = await container.audio.transcribe(*arguments)
    if isinstance(body, dict):
        return JSONResponse(body)
    return PlainTextResponse(body, media_type=content_type)


@router.post("/audio/transcriptions", response_model=None)
async def create_transcription(request: Request, container: ContainerDep, _principal: PrincipalDep) -> Response:
    return await _transcribe(request, container, "transcribe")


@router.post("/audio/translations", response_model=None)
async def create_translation(request: Request, container: ContainerDep, _principal: PrincipalDep) -> Response:
    return await _transcribe(request, container, "translate")
