"""oasis's audio endpoints against the libraries they wrap, called directly, in one run.

    python bench/audio.py [--rounds 3]

- transcription real-time factor (seconds of audio per second of work): oasis `POST /v1/audio/transcriptions`
  against faster-whisper's `WhisperModel.transcribe` on the same model folder, compute type and threads;
- speech characters per second: oasis `POST /v1/audio/speech` (wav, the whole body) against Piper's
  `PiperVoice.synthesize` with the same voice;
- time to the first audio byte of a streamed mp3 answer.

The sides are interleaved round by round and each keeps its best round.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from oasis.engines.piper import voice_files
from oasis.engines.whisper import model_dir
from oasis.settings import ModelSpec
from tests.conftest import PIPER, WHISPER
from tests.server_process import oasis_env, oasis_server

TEXT = " ".join(
    [
        "Self-hosted models answer every request on the machine that asked.",
        "The batch finished overnight, and every result was written exactly once.",
        "Speech recognition turns this paragraph back into the words it started from.",
        "A quiet machine gives honest numbers, so nothing else runs while we measure.",
    ]
    * 2
)


def best(values: list[float], higher: bool = True) -> float:
    return max(values) if higher else min(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    threads = os.cpu_count() or 1

    from faster_whisper import WhisperModel
    from piper import PiperVoice

    whisper_spec = ModelSpec.model_validate({**WHISPER, "options": {**WHISPER["options"], "cpu_threads": threads}})
    direct_whisper = WhisperModel(str(model_dir(whisper_spec)), device="cpu", compute_type="int8", cpu_threads=threads)
    model, config = voice_files(ModelSpec.model_validate(PIPER))
    direct_voice = PiperVoice.load(str(model), config_path=str(config))

    results: dict[str, dict[str, list[float]]] = {"oasis": {}, "direct": {}}

    def record(side: str, key: str, value: float) -> None:
        results[side].setdefault(key, []).append(value)

    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"oasis-bench-audio-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "oasis.yaml").write_text(yaml.safe_dump({"models": [whisper_spec.model_dump(), PIPER]}))
    with oasis_server(folder / "data", oasis_env(None), "--config", str(folder / "oasis.yaml")) as server:
        http = httpx.Client(base_url=server.base_url, timeout=600)
        speech = {"model": "tts-1", "voice": "alloy", "input": TEXT}
        clip = http.post("/v1/audio/speech", json={**speech, "response_format": "wav"}).content
        seconds_of_audio = (len(clip) - 44) / 2 / 24_000
        for round_number in range(args.rounds):
            order = ["oasis", "direct"] if round_number % 2 == 0 else ["direct", "oasis"]
            for side in order:
                started = time.perf_counter()
                if side == "oasis":
                    reply = http.post(
                        "/v1/audio/transcriptions", data={"model": "whisper-1"}, files={"file": ("clip.wav", clip)}
                    )
                    reply.raise_for_status()
                else:
                    segments, _ = direct_whisper.transcribe(
                        io.BytesIO(clip), temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
                    )
                    "".join(segment.text for segment in segments)
                record(side, "transcription RTF (x real time)", seconds_of_audio / (time.perf_counter() - started))

                started = time.perf_counter()
                if side == "oasis":
                    http.post("/v1/audio/speech", json={**speech, "response_format": "wav"}).raise_for_status()
                else:
                    for _ in direct_voice.synthesize(TEXT):
                        pass
                record(side, "speech characters/s", len(TEXT) / (time.perf_counter() - started))

            started = time.perf_counter()
            with http.stream("POST", "/v1/audio/speech", json={**speech, "response_format": "mp3"}) as streamed:
                next(streamed.iter_bytes())
                record("oasis", "speech first byte ms (mp3, streamed)", (time.perf_counter() - started) * 1000)
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)

    print(
        f"\nclip: {seconds_of_audio:.1f} s of speech, {len(TEXT)} characters; {threads} threads; best of {args.rounds}"
    )
    print("| metric | oasis | library directly | oasis / direct |\n|---|---|---|---|")
    for key, values in results["oasis"].items():
        higher = "ms" not in key
        ours = best(values, higher)
        if key in results["direct"]:
            theirs = best(results["direct"][key], higher)
            print(f"| {key} | {ours:.2f} | {theirs:.2f} | {ours / theirs:.3f} |")
        else:
            print(f"| {key} | {ours:.1f} | - | - |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
