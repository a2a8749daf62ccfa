"""Audio through the official SDK: speech in every format, transcription formats, word timestamps,
translation, and bad input — on the shipped Whisper base and Piper voice."""

from __future__ import annotations

import asyncio
import base64
import inspect
import io
import json
import re
import shutil
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import httpx
import openai
import pytest
import yaml

from tests.conftest import PIPER, WHISPER, Harness, smollm
from tests.server_process import oasis_env, oasis_server

SENTENCE = "The quick brown fox jumps over the lazy dog. Open models run on your own machine."
MAGIC = {
    "mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3"),
    "opus": (b"OggS",),
    "aac": (b"\xff\xf1", b"\xff\xf9"),
    "flac": (b"fLaC",),
    "wav": (b"RIFF",),
}


def duration(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return samples / stream.rate


def word_error_rate(reference: str, heard: str) -> float:
    """Word-level edit distance (substitutions, insertions, deletions) over the reference's length."""
    expected, got = re.findall(r"[a-z]+", reference.lower()), re.findall(r"[a-z]+", heard.lower())
    row = list(range(len(got) + 1))
    for position, word in enumerate(expected, start=1):
        previous, row[0] = row[0], position
        for column, candidate in enumerate(got, start=1):
            previous, row[column] = (
                row[column],
                min(row[column] + 1, row[column - 1] + 1, previous + (word != candidate)),
            )
    return row[-1] / len(expected)


async def speak(client: openai.AsyncOpenAI, text: str = SENTENCE, **options: object) -> bytes:
    reply = await client.audio.speech.create(model="tts-1", voice=options.pop("voice", "alloy"), input=text, **options)  # type: ignore[arg-type]
    return reply.content


@pytest.mark.parametrize("response_format", ["mp3", "opus", "aac", "flac", "wav", "pcm"])
async def test_every_speech_format_is_a_valid_container(audio_oasis: Harness, response_format: str) -> None:
    async with audio_oasis.http() as http:
        response = await http.post(
            "/v1/audio/speech",
            json={"model": "tts-1", "voice": "nova", "input": SENTENCE, "response_format": response_format},
        )
    assert response.status_code == 200
    data = response.content
    if response_format == "pcm":
        assert response.headers["content-type"] == "audio/pcm"
        assert len(data) % 2 == 0 and 2.0 < len(data) / 2 / 24_000 < 15  # 16-bit mono at 24 kHz
        return
    assert data.startswith(MAGIC[response_format]), data[:8]
    assert 2.0 < duration(data) < 15
    with av.open(io.BytesIO(data)) as container:
        # Opus always decodes at 48 kHz, whatever rate it was encoded from.
        expected_rate = 48_000 if response_format == "opus" else 24_000
        assert container.streams.audio[0].rate == expected_rate and container.streams.audio[0].channels == 1


async def test_speed_two_is_shorter_and_voices_differ(audio_oasis: Harness) -> None:
    client = audio_oasis.sdk()
    normal = duration(await speak(client, response_format="wav"))
    fast = duration(await speak(client, response_format="wav", speed=2.0))
    assert fast < normal * 0.7
    # Piper samples its timing noise, so one voice's length varies by 1-3% between runs (more in some builds of
    # its dependencies); onyx's pace is set slower than nova's, which shows as about 8% longer speech on average.
    # Two sentences a sample and four samples a voice, so that the noise averages out well inside that margin.
    text = f"{SENTENCE} {SENTENCE}"
    onyx = [duration(await speak(client, text, response_format="wav", voice="onyx")) for _ in range(4)]
    nova = [duration(await speak(client, text, response_format="wav", voice="nova")) for _ in range(4)]
    assert sum(onyx) > sum(nova) * 1.03, (onyx, nova)


async def test_a_voice_named_by_id_speaks(audio_oasis: Harness) -> None:
    async with audio_oasis.http() as http:
        by_id = await http.post("/v1/audio/speech", json={"model": "tts-1", "voice": {"id": "alloy"}, "input": "Hi."})
    assert by_id.status_code == 200 and by_id.content.startswith(MAGIC["mp3"]), by_id.text[:200]


async def test_speech_round_trips_through_transcription(audio_oasis: Harness) -> None:
    client = audio_oasis.sdk()
    audio = await speak(client, response_format="mp3")
    text = await client.audio.transcriptions.create(model="whisper-1", file=("speech.mp3", audio))
    # Piper samples its timing noise, so the speech differs a little from run to run, and Whisper base has once
    # heard "quit" for "quick": judge the transcript as ASR is judged, by its word error rate over the sentence.
    assert word_error_rate(SENTENCE, text.text) <= 0.15, text.text


async def test_a_streamed_transcription_sends_text_deltas_then_the_whole_text(audio_oasis: Harness) -> None:
    """`stream: true` (OpenAI added it after the 2.0.0 spec): `transcript.text.delta` events that join into the text
    of the last, `transcript.text.done`; the JSON answer counts the audio's seconds in `usage`, as Whisper's does."""
    client = audio_oasis.sdk()
    audio = await speak(client, SENTENCE + " " + SENTENCE, response_format="wav")
    whole = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio))
    usage = whole.model_dump()["usage"]
    assert usage["type"] == "duration" and usage["seconds"] == pytest.approx(duration(audio), abs=0.1)
    async with audio_oasis.http() as http:
        streamed = await http.post(
            "/v1/audio/transcriptions", data={"model": "whisper-1", "stream": "true"}, files={"file": ("a.wav", audio)}
        )
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    names = [line.removeprefix("event: ") for line in streamed.text.splitlines() if line.startswith("event: ")]
    events = [
        json.loads(line.removeprefix("data: ")) for line in streamed.text.splitlines() if line.startswith("data: ")
    ]
    assert [event["type"] for event in events] == names
    *deltas, done = events
    assert deltas and {event["type"] for event in deltas} == {"transcript.text.delta"}
    assert done["type"] == "transcript.text.done" and "".join(event["delta"] for event in deltas) == done["text"]
    assert word_error_rate(SENTENCE + " " + SENTENCE, done["text"]) <= 0.15, done["text"]
    if "stream" in inspect.signature(client.audio.transcriptions.create).parameters:  # SDKs that stream them
        stream = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), stream=True)
        through_sdk = [event async for event in stream]
        assert through_sdk[-1].type == "transcript.text.done" and through_sdk[-1].text  # type: ignore[union-attr]


@pytest.mark.slow
def test_a_streamed_transcription_sends_each_segment_as_it_is_decoded(tmp_path: Path, postgres_url: str | None) -> None:
    """The deltas leave as Whisper decodes each 30-second window, not once the whole file is transcribed: with a
    recording of two windows the first delta arrives well before the transcription ends (a real server: the
    in-process transport hands over whole bodies)."""
    config = tmp_path / "oasis.yaml"
    config.write_text(yaml.safe_dump({"defaults": False, "models": [WHISPER, PIPER]}))
    text = (  # varied: repeated sentences send Whisper down its fallback temperatures, window after window
        "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow. The rainbow is a "
        "division of white light into many beautiful colors. These take the shape of a long round arch, with its "
        "path high above, and its two ends apparently beyond the horizon. There is, according to legend, a boiling "
        "pot of gold at one end. People look, but no one ever finds it. When a man looks for something beyond his "
        "reach, his friends say he is looking for the pot of gold at the end of the rainbow. Throughout the "
        "centuries people have explained the rainbow in various ways. Some have accepted it as a miracle without "
        "physical explanation. To the Hebrews it was a token that there would be no more universal floods."
    )
    with oasis_server(tmp_path / "data", oasis_env(postgres_url), "--config", str(config)) as server:
        spoken = httpx.post(
            f"{server.base_url}/v1/audio/speech",
            json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "wav"},
            timeout=120,
        )
        assert duration(spoken.content) > 32  # more than one of Whisper's windows
        arrivals: list[tuple[float, dict[str, Any]]] = []
        started = time.perf_counter()
        with httpx.stream(
            "POST",
            f"{server.base_url}/v1/audio/transcriptions",
            data={"model": "whisper-1", "stream": "true"},
            files={"file": ("a.wav", spoken.content)},
            timeout=300,
        ) as streamed:
            assert streamed.status_code == 200
            for line in streamed.iter_lines():
                if line.startswith("data: "):
                    arrivals.append((time.perf_counter() - started, json.loads(line.removeprefix("data: "))))
    *deltas, (finished, done) = arrivals
    assert len(deltas) >= 2 and done["type"] == "transcript.text.done"
    assert "".join(event["delta"] for _, event in deltas) == done["text"]
    assert word_error_rate(text, done["text"]) <= 0.2, done["text"]
    first = deltas[0][0]
    assert first < finished * 0.9, (first, finished)  # sent whole, the first delta would leave with the last


async def test_a_file_that_is_not_audio_is_a_400_when_streamed_too(audio_oasis: Harness) -> None:
    async with audio_oasis.http() as http:
        response = await http.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper-1", "stream": "true"},
            files={"file": ("notes.wav", b"this is not audio at all" * 20)},
        )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_file_format"


async def test_speech_streamed_as_events_for_gpt_4o_mini_tts(audio_oasis: Harness) -> None:
    """`stream_format: "sse"` (which OpenAI serves for gpt-4o-mini-tts, not tts-1): `speech.audio.delta` events of
    base64 audio in the asked format, whose pieces join into the same kind of audio the plain answer gives, then
    `speech.audio.done` with the usage."""
    async with audio_oasis.http() as http:
        plain = await http.post(
            "/v1/audio/speech",
            json={"model": "gpt-4o-mini-tts", "voice": "alloy", "input": SENTENCE, "response_format": "wav"},
        )
        streamed = await http.post(
            "/v1/audio/speech",
            json={
                "model": "gpt-4o-mini-tts",
                "voice": "alloy",
                "input": SENTENCE + " " + SENTENCE,
                "response_format": "wav",
                "stream_format": "sse",
            },
        )
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: ")]
    *deltas, done = events
    assert len(deltas) >= 2 and {event["type"] for event in deltas} == {"speech.audio.delta"}
    assert done == {"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
    audio = b"".join(base64.b64decode(event["audio"]) for event in deltas)
    assert audio.startswith(MAGIC["wav"]) and plain.content.startswith(MAGIC["wav"])
    assert 1.5 < duration(audio) / duration(plain.content) < 2.5  # twice the text: about twice as long
    heard = await audio_oasis.sdk().audio.transcriptions.create(model="whisper-1", file=("a.wav", audio))
    assert word_error_rate(SENTENCE + " " + SENTENCE, heard.text) <= 0.15, heard.text


def _wav(pcm: bytes, rate: int = 24000) -> bytes:
    """16-bit mono PCM as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as file:
        file.setnchannels(1)
        file.setsampwidth(2)
        file.setframerate(rate)
        file.writeframes(pcm)
    return out.getvalue()


async def test_chunking_strategy_transcribes_only_where_speech_is_heard(audio_oasis: Harness) -> None:
    """`chunking_strategy` (after the 2.0.0 spec): voice-activity detection skips what holds no speech; speech
    around a pause is heard whole."""
    client = audio_oasis.sdk()
    first, second = "The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs."
    pause = b"\0\0" * 24000 * 5  # five seconds of silence
    recording = _wav(
        await speak(client, first, response_format="pcm") + pause + await speak(client, second, response_format="pcm")
    )
    async with audio_oasis.http() as http:
        silent = await http.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper-1", "chunking_strategy": "auto"},
            files={"file": ("silence.wav", _wav(b"\0\0" * 24000 * 8))},
        )
        detected = await http.post(
            "/v1/audio/transcriptions",
            data={
                "model": "whisper-1",
                "response_format": "verbose_json",
                # as the SDKs send an object in a form, field by field
                "chunking_strategy[type]": "server_vad",
                "chunking_strategy[threshold]": "0.5",
                "chunking_strategy[silence_duration_ms]": "500",
                "chunking_strategy[prefix_padding_ms]": "200",
            },
            files={"file": ("two.wav", recording)},
        )
    # no speech, nothing transcribed (Whisper alone hears "... ... ..." in eight seconds of silence)
    assert silent.status_code == 200 and silent.json()["text"] == ""
    assert detected.status_code == 200, detected.text
    verbose = detected.json()
    assert word_error_rate(f"{first} {second}", verbose["text"]) <= 0.15, verbose["text"]


@pytest.mark.parametrize(
    "strategy",
    [
        {"chunking_strategy": "sometimes"},
        {"chunking_strategy": '{"type": "server_vad", "threshold": 2}'},
        {"chunking_strategy[type]": "server_vad", "chunking_strategy[silence_duration_ms]": "-5"},
        {"chunking_strategy[type]": "server_vad", "chunking_strategy[volume]": "11"},
        {"chunking_strategy[type]": "client_vad"},
    ],
)
async def test_a_bad_chunking_strategy_is_a_400(audio_oasis: Harness, strategy: dict[str, str]) -> None:
    async with audio_oasis.http() as http:
        response = await http.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper-1", **strategy},
            files={"file": ("a.wav", _wav(b"\0\0" * 2400))},
        )
    assert response.status_code == 400 and response.json()["error"]["param"] == "chunking_strategy", response.text


async def test_srt_and_vtt_are_well_formed(audio_oasis: Harness) -> None:
    client = audio_oasis.sdk()
    audio = await speak(client, response_format="wav")
    srt = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), response_format="srt")
    vtt = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), response_format="vtt")
    text = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio), response_format="text")
    srt_text, vtt_text = str(srt), str(vtt)
    blocks = [block for block in srt_text.strip().split("\n\n") if block]
    for number, block in enumerate(blocks, start=1):
        index, timing, *lines = block.split("\n")
        assert index == str(number) and lines
        assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", timing)
    assert vtt_text.startswith("WEBVTT\n\n")
    timings = re.findall(r"^(\d\d:\d\d:\d\d\.\d{3}) --> (\d\d:\d\d:\d\d\.\d{3})$", vtt_text, re.M)
    assert timings and all(start <= end for start, end in timings)
    assert "fox" in str(text).lower()


async def test_verbose_json_with_word_timestamps(audio_oasis: Harness) -> None:
    client = audio_oasis.sdk()
    audio = await speak(client, response_format="flac")
    result = await client.audio.transcriptions.create(
        model="whisper-1",
        file=("a.flac", audio),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    body = result.model_dump()  # as plain data: SDKs before verbose_json types keep these fields as dicts
    assert body["language"] == "english" and body["duration"] == pytest.approx(duration(audio), abs=0.1)
    assert body["task"] == "transcribe" and "fox" in body["text"].lower()
    segment = body["segments"][0]
    assert segment["id"] == 0 and segment["tokens"] and segment["avg_logprob"] <= 0
    assert 0 <= segment["no_speech_prob"] <= 1 and segment["start"] <= segment["end"]
    words = body["words"]
    assert len(words) >= 12 and words[0]["word"].lower().strip() == "the"
    starts = [word["start"] for word in words]
    assert starts == sorted(starts)
    assert all(0 <= word["start"] <= word["end"] <= body["duration"] + 0.01 for word in words)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (scripts/check.sh installs it)")
async def test_translation_of_german_speech_is_english(audio_oasis: Harness, tmp_path: Path) -> None:
    clip = tmp_path / "de.wav"
    german = "Ich trinke jeden Morgen eine Tasse Kaffee mit Milch."
    subprocess.run(["espeak-ng", "-v", "de", "-s", "130", "-w", str(clip), german], check=True)
    client = audio_oasis.sdk()
    heard = await client.audio.transcriptions.create(
        model="whisper-1", file=("de.wav", clip.read_bytes()), language="de", response_format="verbose_json"
    )
    assert heard.model_dump()["language"] == "german"
    assert {"tasse", "milch"} <= set(re.findall(r"\w+", heard.text.lower()))
    english = await client.audio.translations.create(model="whisper-1", file=("de.wav", clip.read_bytes()))
    words = set(re.findall(r"[a-z]+", english.text.lower()))
    assert {"coffee", "milk"} <= words and not words & {"kaffee", "milch", "mit"}, english.text
    # A verbose translation names the language of its output: always English (OpenAI's TranslationVerbose).
    verbose = await client.audio.translations.create(
        model="whisper-1", file=("de.wav", clip.read_bytes()), response_format="verbose_json"
    )
    assert verbose.model_dump()["language"] == "english" and verbose.model_dump()["task"] == "translate"


@pytest.mark.parametrize(
    ("fields", "file", "status", "param"),
    [
        ({}, ("notes.wav", b"this is not audio at all" * 20), 400, "file"),
        ({}, ("empty.wav", b""), 400, "file"),
        ({}, ("notes.txt", b"RIFF"), 400, "file"),
        ({"response_format": "docx"}, None, 400, "response_format"),
        ({"language": "klingon"}, None, 400, "language"),
        ({"timestamp_granularities[]": "word"}, None, 400, "timestamp_granularities"),
        ({"stream": "true", "response_format": "srt"}, None, 400, "response_format"),
        ({"stream": "yes"}, None, 400, "stream"),
        ({"model": "no-such-model"}, None, 404, "model"),
        ({"model": "tts-1"}, None, 400, "model"),
    ],
)
async def test_bad_transcription_requests(
    audio_oasis: Harness, fields: dict[str, str], file: tuple[str, bytes] | None, status: int, param: str
) -> None:
    audio = file or ("ok.wav", await speak(audio_oasis.sdk(), response_format="wav"))
    async with audio_oasis.http() as http:
        response = await http.post(
            "/v1/audio/transcriptions", data={"model": "whisper-1", **fields}, files={"file": audio}
        )
    assert response.status_code == status, response.text
    assert response.json()["error"]["param"] == param


async def test_audio_over_25_mb_is_413(audio_oasis: Harness) -> None:
    async with audio_oasis.http() as http:
        response = await http.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("big.wav", b"\0" * (25 * 1024 * 1024 + 1))},
        )
    assert response.status_code == 413 and response.json()["error"]["param"] == "file"


async def test_audio_longer_than_the_limit_is_a_400_counted_from_its_samples(
    start_oasis: Callable[..., Any],
) -> None:
    """25 MB of low-bitrate audio can last hours; the limit is read off the decoded samples, not the header."""
    whisper = {**WHISPER, "options": {**WHISPER["options"], "max_audio_seconds": 4}}
    harness: Harness = await start_oasis(engine_factories=None, models=[whisper, PIPER])
    client = harness.sdk()
    long_clip = await speak(client, response_format="flac")
    short_clip = await speak(client, "Hello there.", response_format="flac")
    assert duration(long_clip) > 4 > duration(short_clip)
    with pytest.raises(openai.BadRequestError) as refused:
        await client.audio.transcriptions.create(model="whisper-1", file=("long.flac", long_clip))
    assert refused.value.body["param"] == "file" and refused.value.body["code"] == "audio_too_long"  # type: ignore[index]
    heard = await client.audio.transcriptions.create(model="whisper-1", file=("short.flac", short_clip))
    assert "hello" in heard.text.lower()


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"voice": "darth"}, "voice"),
        ({"voice": {"id": "darth"}}, "voice"),
        ({"voice": {"name": "alloy"}}, "voice.id"),
        ({"input": "x" * 4097}, "input"),
        ({"input": "   "}, "input"),
        ({"speed": 5}, "speed"),
        ({"response_format": "ogg"}, "response_format"),
        ({"model": "whisper-1"}, "model"),
        # events of base64 audio: what OpenAI refuses for tts-1 too, rather than raw bytes the client cannot read
        ({"stream_format": "sse"}, "stream_format"),
        ({"stream_format": "chunks"}, "stream_format"),
    ],
)
async def test_bad_speech_requests(audio_oasis: Harness, change: dict[str, object], param: str) -> None:
    async with audio_oasis.http() as http:
        response = await http.post(
            "/v1/audio/speech", json={"model": "tts-1", "voice": "alloy", "input": "Hello.", **change}
        )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_speech_does_not_stall_other_endpoints(audio_oasis: Harness) -> None:
    client = audio_oasis.sdk()
    long_text = " ".join([SENTENCE] * 8)
    speaking = asyncio.create_task(speak(client, long_text, response_format="wav"))
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    await client.models.list()
    assert time.perf_counter() - started < 0.5 and not speaking.done()
    await speaking


def test_speech_streams_before_the_text_is_all_spoken(tmp_path: Path, postgres_url: str | None) -> None:
    config = tmp_path / "oasis.yaml"
    config.write_text(yaml.safe_dump({"defaults": False, "models": [WHISPER, PIPER]}))
    text = " ".join(f"This is sentence number {n} of a long passage read aloud." for n in range(1, 13))
    with oasis_server(tmp_path / "data", oasis_env(postgres_url), "--config", str(config)) as server:
        started = time.perf_counter()
        first = None
        size = 0
        with httpx.stream(
            "POST",
            f"{server.base_url}/v1/audio/speech",
            json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "mp3"},
            timeout=120,
        ) as response:
            assert response.headers.get("transfer-encoding") == "chunked"
            for chunk in response.iter_bytes():
                first = first or time.perf_counter()
                size += len(chunk)
        total = time.perf_counter() - started
    assert first is not None and size > 10_000
    assert first - started < total / 3, (first - started, total)


async def test_a_chat_audio_part_is_heard_by_the_transcription_model(start_oasis: Callable[..., Any]) -> None:
    """For a local text model an input_audio part becomes its transcript (`chat.audio_transcription_model`,
    whisper-1), in its place: the same prompt as the transcript sent as text."""
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(), WHISPER, PIPER])
    client = harness.sdk()
    audio = await speak(client, response_format="wav")
    heard = await client.audio.transcriptions.create(model="whisper-1", file=("a.wav", audio))
    encoded = base64.b64encode(audio).decode()

    async def reply(part: dict[str, Any], **fields: Any) -> Any:
        question = {"type": "text", "text": "What was said?"}
        return await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": [question, part]}],  # type: ignore[list-item,misc]
            temperature=0,
            max_tokens=8,
            **fields,
        )

    by_ear = await reply({"type": "input_audio", "input_audio": {"data": encoded, "format": "wav"}})
    by_text = await reply({"type": "text", "text": f"[audio] {heard.text}"})
    assert by_ear.usage and by_text.usage and by_ear.usage.prompt_tokens == by_text.usage.prompt_tokens
    assert by_ear.choices[0].message.content == by_text.choices[0].message.content

    for part, param, code in (
        ({"type": "input_audio", "input_audio": {"data": "not base64!", "format": "wav"}}, ".data", None),
        (
            {"type": "input_audio", "input_audio": {"data": base64.b64encode(b"noise" * 99).decode(), "format": "wav"}},
            ".data",
            "invalid_audio",
        ),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            await reply(part)
        assert refused.value.param == "messages[0].content[1].input_audio" + param
        assert code is None or refused.value.code == code
    with pytest.raises(openai.BadRequestError) as refused:  # a spoken answer needs its voice and format
        await reply({"type": "text", "text": "hi"}, extra_body={"modalities": ["text", "audio"]})
    assert refused.value.param == "audio"


SPOKEN = {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}


async def test_a_local_model_answers_aloud_and_its_answer_is_named_by_id_later(
    start_oasis: Callable[..., Any],
) -> None:
    """`modalities: ["text", "audio"]` (after the 2.0.0 spec): the text model's answer, spoken by the speech model,
    comes as `message.audio` (its transcript, base64 audio, an id and when it expires) with no `content`, as
    OpenAI's audio models answer; a later request names the answer by its id alone."""
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(), WHISPER, PIPER])
    client = harness.sdk()
    ask: list[Any] = [{"role": "user", "content": "Say good morning to the team."}]
    asked = {"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 24}
    reply = await client.chat.completions.create(messages=ask, extra_body=SPOKEN, **asked)
    message = reply.choices[0].message.model_dump()
    written = await client.chat.completions.create(messages=ask, **asked)
    assert message["content"] is None and message["audio"]["transcript"] == written.choices[0].message.content
    audio = base64.b64decode(message["audio"]["data"])
    assert audio.startswith(MAGIC["wav"]) and duration(audio) > 0.5
    assert message["audio"]["id"].startswith("audio_") and message["audio"]["expires_at"] > time.time() + 3000
    # the audio is the transcript spoken: as long as the speech endpoint's reading of it (Piper's timing noise aside)
    read_aloud = await speak(client, message["audio"]["transcript"], response_format="wav")
    assert 0.8 < duration(audio) / duration(read_aloud) < 1.25

    # the answer sent back by its id reads as what it said
    again: Any = {"role": "user", "content": "Once more, please."}
    by_id = await client.chat.completions.create(
        messages=[*ask, {"role": "assistant", "audio": {"id": message["audio"]["id"]}}, again], **asked
    )
    by_text = await client.chat.completions.create(
        messages=[*ask, {"role": "assistant", "content": message["audio"]["transcript"]}, again], **asked
    )
    assert by_id.usage and by_text.usage and by_id.usage.prompt_tokens == by_text.usage.prompt_tokens
    assert by_id.choices[0].message.content == by_text.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as unknown:
        await client.chat.completions.create(
            messages=[*ask, {"role": "assistant", "audio": {"id": "audio_nope"}}, again], **asked
        )
    assert unknown.value.param == "messages[1].audio.id"

    # streamed: the transcript as audio.transcript deltas, then the audio, under one id
    async with harness.http() as http:
        streamed = await http.post(
            "/v1/chat/completions",
            json={
                "messages": ask,
                "stream": True,
                **asked,
                **SPOKEN,
                "audio": {"voice": "nova", "format": "pcm16"},
            },
        )
    deltas = [
        json.loads(line[6:])["choices"][0]["delta"]
        for line in streamed.text.splitlines()
        if line.startswith("data: {") and json.loads(line[6:])["choices"]
    ]
    spoken = [delta["audio"] for delta in deltas if "audio" in delta]
    assert not any(delta.get("content") for delta in deltas)
    assert {piece["id"] for piece in spoken} == {spoken[0]["id"]}
    assert "".join(piece.get("transcript", "") for piece in spoken) == message["audio"]["transcript"]
    pcm = b"".join(base64.b64decode(piece["data"]) for piece in spoken if "data" in piece)
    assert len(pcm) > 24000 and spoken[-1]["expires_at"] > time.time()  # 24 kHz 16-bit: over half a second

    # an answer that ends in a call is not spoken, streamed or not: no audio id that leads nowhere
    who = {"type": "object", "properties": {"who": {"type": "string", "maxLength": 12}}, "required": ["who"]}
    tool: Any = {
        "type": "function",
        "function": {"name": "greet", "parameters": {**who, "additionalProperties": False}},
    }
    called = {"tools": [tool], "tool_choice": "required", "parallel_tool_calls": False, **SPOKEN, "max_tokens": 60}
    async with harness.http() as http:
        whole = (await http.post("/v1/chat/completions", json={"messages": ask, **{**asked, **called}})).json()
        streamed = await http.post(
            "/v1/chat/completions", json={"messages": ask, "stream": True, **{**asked, **called}}
        )
    assert whole["choices"][0]["finish_reason"] == "tool_calls" and "audio" not in whole["choices"][0]["message"]
    assert '"audio"' not in streamed.text and '"tool_calls"' in streamed.text


async def test_a_spoken_answer_is_forgotten_when_it_expires(start_oasis: Callable[..., Any]) -> None:
    harness: Harness = await start_oasis(
        engine_factories=None, models=[smollm(), PIPER], chat={"spoken_answer_seconds": 1}
    )
    client = harness.sdk()
    ask: list[Any] = [{"role": "user", "content": "Say hi."}]
    asked = {"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 8}
    answer = (await client.chat.completions.create(messages=ask, extra_body=SPOKEN, **asked)).choices[0].message
    audio = answer.model_dump()["audio"]
    await asyncio.sleep(2.1)
    later: list[Any] = [*ask, {"role": "assistant", "audio": {"id": audio["id"]}}, {"role": "user", "content": "Hi."}]
    with pytest.raises(openai.BadRequestError) as expired:
        await client.chat.completions.create(messages=later, **asked)
    assert expired.value.param == "messages[1].audio.id"
    later[1]["content"] = audio["transcript"]  # what was said, sent along: that is read
    assert (await client.chat.completions.create(messages=later, **asked)).choices[0].message.content is not None


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"audio": {"voice": "alloy", "format": "ogg"}}, "audio.format"),
        ({"audio": {"voice": "darth", "format": "wav"}}, "audio.voice"),
        ({"modalities": ["text", "video"]}, "modalities"),
        ({"audio": None}, "audio"),
    ],
)
async def test_bad_spoken_answer_requests(audio_chat: Harness, change: dict[str, Any], param: str) -> None:
    async with audio_chat.http() as http:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], **SPOKEN, **change}
        response = await http.post("/v1/chat/completions", json={k: v for k, v in body.items() if v is not None})
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


@pytest.fixture
async def audio_chat(start_oasis: Callable[..., Any]) -> Harness:
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm(), PIPER])
    return harness
