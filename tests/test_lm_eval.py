"""lm-evaluation-harness's `local-completions` model, pointed at `oasis serve`, scores a local multiple-choice
task through the loglikelihood path (echo + logprobs) and the remote tokenizer extensions. No downloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import smollm
from tests.server_process import oasis_env, oasis_server

QUESTIONS = [
    ("The capital of France is", [" Paris", " banana", " seven"], 0),
    ("The capital of Germany is", [" purple", " Berlin", " dog"], 1),
    ("Water freezes at zero degrees", [" Celsius", " elephants", " Tuesday"], 0),
    ("The opposite of hot is", [" keyboard", " window", " cold"], 2),
    ("One, two, three, four,", [" five", " dog", " blue"], 0),
    ("The sun rises in the", [" fridge", " east", " spoon"], 1),
]


def test_lm_eval_local_completions_scores_a_local_task(
    tmp_path: Path, postgres_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    data = tmp_path / "capitals.jsonl"
    data.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in QUESTIONS))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "oasis_capitals.yaml").write_text(
        yaml.safe_dump(
            {
                "task": "oasis_capitals",
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(data)}},
                "test_split": "test",
                "output_type": "multiple_choice",
                "doc_to_text": "{{question}}",
                "doc_to_choice": "{{choices}}",
                "doc_to_target": "{{answer}}",
                "metric_list": [{"metric": "acc"}],
            }
        )
    )
    config = tmp_path / "oasis.yaml"
    config.write_text(yaml.safe_dump({"defaults": False, "models": [smollm()]}))
    with oasis_server(tmp_path / "data", oasis_env(postgres_url), "--config", str(config)) as server:
        results = simple_evaluate(
            model="local-completions",
            model_args=(
                f"model=gpt-3.5-turbo-instruct,base_url={server.base_url}/v1/completions,"
                "tokenizer_backend=remote,tokenized_requests=True,num_concurrent=2,max_retries=1"
            ),
            tasks=["oasis_capitals"],
            task_manager=TaskManager(include_path=str(tasks)),
        )
    assert results is not None
    scores = results["results"]["oasis_capitals"]
    # Chance is 1/3; these are easy enough for a 135M model when its log probabilities are read right.
    assert scores["acc,none"] >= 5 / 6, scores
