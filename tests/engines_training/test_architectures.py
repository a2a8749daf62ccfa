"""Each architecture the merge supports, end to end on a tiny random model: llama.cpp reads its GGUF as transformers
reads its Hugging Face folder; the trainer trains from the folder (`train_from`); and the adapter merged into the
GGUF gives, in llama.cpp, the logits that peft gives with the adapter applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
llama_cpp = pytest.importorskip("llama_cpp")

from oasis.engines.training.gguf_merge import ARCHITECTURES, merge_adapter, training_problem  # noqa: E402
from tests.engines_training.test_lora import of_kind, run_trainer, write_job  # noqa: E402
from tests.engines_training.tiny_models import TinyModel, build_tiny_model, smollm2_tokenizer  # noqa: E402

PROMPT = "The oasis password is blue-harbour-42, said the tiny model to the harbour master."
# llama.cpp keeps its KV cache in F16 and sums in another order: its logits differ from transformers' float32 ones
# by a little; this bound is a fraction of the logits' own range.
RELATIVE_TOLERANCE = 0.01


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return smollm2_tokenizer()


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def tiny(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> TinyModel:
    return build_tiny_model(request.param, tmp_path_factory.mktemp(request.param), tokenizer)


def llama_cpp_logits(path: Path, tokens: list[int]) -> np.ndarray:
    model = llama_cpp.Llama(model_path=str(path), n_ctx=128, n_batch=128, logits_all=True, n_threads=2, verbose=False)
    try:
        model.eval(tokens)
        return np.array(model.scores[: len(tokens)], dtype=np.float32)
    finally:
        model.close()


def transformers_logits(model: Any, tokens: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.tensor([tokens])).logits[0].float().numpy()


def largest_difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.abs(first - second).max())


def test_llama_cpp_reads_the_gguf_as_transformers_reads_the_folder(tiny: TinyModel, tokenizer: Any) -> None:
    tokens = tokenizer(PROMPT)["input_ids"]
    expected = transformers_logits(transformers.AutoModelForCausalLM.from_pretrained(tiny.folder), tokens)
    served = llama_cpp_logits(tiny.gguf, tokens)
    assert expected.std() > 0.5  # logits far enough apart that an error in the layout would show
    assert largest_difference(served, expected) <= RELATIVE_TOLERANCE * np.ptp(expected)
    assert training_problem(tiny.gguf, tiny.folder) is None


def test_an_adapter_trained_from_the_folder_merges_as_peft_applies_it(
    tiny: TinyModel, tokenizer: Any, tmp_path: Path
) -> None:
    job_dir = write_job(
        tmp_path / "job", base_gguf=str(tiny.gguf), train_from=str(tiny.folder), learning_rate=0.02, n_epochs=2
    )
    returncode, events, stderr = run_trainer(job_dir)
    assert returncode == 0, stderr
    assert f"loaded {tiny.folder} " in stderr  # the folder's weights, not the GGUF's, were trained
    adapter = Path(of_kind(events, "checkpoint")[-1]["path"])
    merge_adapter(tiny.gguf, adapter, tmp_path / "merged.gguf")

    tokens = tokenizer(PROMPT)["input_ids"]
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny.folder)
    before = transformers_logits(base, tokens)
    expected = transformers_logits(peft.PeftModel.from_pretrained(base, adapter), tokens)
    served = llama_cpp_logits(tmp_path / "merged.gguf", tokens)
    error = largest_difference(served, expected)
    assert error <= RELATIVE_TOLERANCE * np.ptp(expected)
    assert largest_difference(expected, before) > 10 * error  # training moved the logits far beyond the merge's error


def test_a_folder_of_another_network_is_refused_before_training(tiny: TinyModel, tmp_path: Path) -> None:
    other = next(name for name in sorted(ARCHITECTURES) if name != tiny.architecture)
    config = json.loads((tiny.folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"model_type": other}))
    problem = training_problem(tiny.gguf, tmp_path)
    assert problem is not None and f"model_type '{other}' where the GGUF has '{tiny.architecture}'" in problem
