"""LoRA fine-tuning of a GGUF model with transformers + peft: a plain, resumable, single-process torch loop.

transformers loads the GGUF itself (dequantized to float32) together with its tokenizer and chat template, or, when
the model's config names a Hugging Face folder (`train_from`), the weights and tokenizer of that folder: the same
network in full precision, loaded in a fraction of the time. Either way the adapter is merged into the GGUF that
llama.cpp serves. peft adds
rank-r adapters (alpha = 2r, dropout 0.05) to every linear projection; AdamW trains them with a short linear warmup,
then a constant learning rate, and the loss counts only the assistant tokens (see examples.py).

Device: whatever torch sees, CUDA if available, else the CPU with `threads` threads; one process on one device.

Deterministic given the seed: the data order comes from its own generator, drawn at each epoch's start. A checkpoint
holds the adapter, the optimizer, the scheduler, the step, the current epoch's order and every RNG state, so a run
resumed from it continues exactly as if it had never stopped (bitwise, on the CPU).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
import torch.nn.functional as functional
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from oasis.engines.training.examples import (
    IGNORE_INDEX,
    ChatExample,
    InvalidExamplesError,
    TokenizedExample,
    read_examples,
    tokenize_examples,
)

logger = logging.getLogger(__name__)

Event = dict[str, Any]
EmitEvent = Callable[[Event], None]

LORA_DROPOUT = 0.05
WARMUP_STEPS = 5
ADAPTER_FILE = "adapter_model.safetensors"
TRAINER_STATE_FILE = "trainer_state.pt"


@dataclass(frozen=True)
class TrainingJob:
    """JOB_DIR/job.json, as the fine-tuning worker writes it."""

    base_gguf: Path
    train_from: Path | None  # a Hugging Face folder holding the GGUF's network, read instead of the GGUF
    chat_template: str | None  # the model's configured template, which replaces the GGUF's when serving
    training_file: Path
    validation_file: Path | None
    n_epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    threads: int
    resume_from: Path | None
    checkpoint_every: int  # steps between checkpoints; epoch ends and the last step are checkpointed regardless
    max_length: int
    lora_rank: int

    @classmethod
    def from_file(cls, path: Path) -> TrainingJob:
        data = json.loads(path.read_text(encoding="utf-8"))

        def optional_path(key: str) -> Path | None:
            return Path(data[key]) if data.get(key) else None

        job = cls(
            base_gguf=Path(data["base_gguf"]),
            train_from=optional_path("train_from"),
            chat_template=data.get("chat_template"),
            training_file=Path(data["training_file"]),
            validation_file=optional_path("validation_file"),
            n_epochs=int(data["n_epochs"]),
            batch_size=int(data["batch_size"]),
            learning_rate=float(data["learning_rate"]),
            seed=int(data["seed"]),
            threads=int(data["threads"]),
            resume_from=optional_path("resume_from"),
            checkpoint_every=int(data["checkpoint_every"]),
            max_length=int(data["max_length"]),
            lora_rank=int(data["lora_rank"]),
        )
        for name in ("n_epochs", "batch_size", "threads", "max_length", "lora_rank"):
            if getattr(job, name) < 1:
                raise ValueError(f"{path}: {name} must be at least 1")
        return job


class InvalidTrainingInputError(Exception):
    """A training or validation file, or hyperparameters, that cannot be used; `code` is the fine-tuning job error
    code and `param` the request field to blame (None: the worker names the file the code is about)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass
class _Progress:
    step: int  # optimizer steps done
    epoch_order: list[int]  # the current epoch's example order


@dataclass(frozen=True)
class _Metrics:
    loss: float
    mean_token_accuracy: float


def train(job: TrainingJob, job_dir: Path, emit: EmitEvent, stop: threading.Event) -> bool:
    """Run (or resume) the job, emitting its events; True when it ran to the end, False when `stop` was set."""
    torch.set_num_threads(job.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)  # CPU ops already are; this covers CUDA's
    _remove_unfinished_checkpoints(job_dir)
    training_examples = _read(job.training_file, "invalid_training_file")
    validation_examples = _read(job.validation_file, "invalid_validation_file") if job.validation_file else None

    started = time.perf_counter()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with _each_gguf_read_once():
        tokenizer = AutoTokenizer.from_pretrained(**_weights(job))
        # Examples are rendered with the template llama.cpp will serve the fine-tune with, whatever the weights'
        # source.
        tokenizer.chat_template = job.chat_template or _gguf_chat_template(job.base_gguf) or tokenizer.chat_template
        training = _tokenize(tokenizer, training_examples, job.max_length, "invalid_training_file")
        validation = (
            _tokenize(tokenizer, validation_examples, job.max_length, "invalid_validation_file")
            if validation_examples
            else []
        )
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if stop.is_set():
            return False
        model = _lora_model(job, device)
    logger.info(
        "loaded %s and tokenized the examples in %.1f s on %s", job.train_from or job.base_gguf, _since(started), device
    )

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=job.learning_rate, weight_decay=0
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_then_constant)
    data_order = torch.Generator().manual_seed(job.seed)
    steps_per_epoch = math.ceil(len(training) / job.batch_size)
    total_steps = steps_per_epoch * job.n_epochs
    progress = _Progress(step=0, epoch_order=[])
    if job.resume_from:
        progress = _restore(job, len(training), model, optimizer, scheduler, data_order, device)
        logger.info("resumed from %s at step %d", job.resume_from, progress.step)

    emit(
        {
            "event": "started",
            "total_steps": total_steps,
            "steps_per_epoch": steps_per_epoch,
            "examples": len(training),
            "trained_tokens": sum(len(example.input_ids) for example in training) * job.n_epochs,
            "resumed_at": progress.step,
        }
    )
    model.train()
    while progress.step < total_steps:
        if stop.is_set():
            return False
        epoch_index, index_in_epoch = divmod(progress.step, steps_per_epoch)
        if index_in_epoch == 0:
            progress.epoch_order = torch.randperm(len(training), generator=data_order).tolist()
        batch_indices = progress.epoch_order[index_in_epoch * job.batch_size : (index_in_epoch + 1) * job.batch_size]
        batch = _collate([training[i] for i in batch_indices], pad_id, device)

        step_started = time.perf_counter()
        loss, correct, counted = _loss_and_accuracy(model, batch)
        loss.backward()
        try:
            optimizer.step()
        except RuntimeError as error:
            if "overflow" not in str(error):
                raise
            # torch refuses a step size past float32's range (Adam's first step is 10x the learning rate)
            why = f"the learning rate {job.learning_rate:g} is too large to take a step with"
            raise _diverged(progress.step + 1, why) from error
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        train_metrics = _Metrics(loss=float(loss.item()), mean_token_accuracy=correct / max(counted, 1))
        progress.step += 1
        _check_converging(progress.step, {"training loss": train_metrics.loss}, model)
        step_seconds = _since(step_started)

        step_event: Event = {
            "event": "step",
            "step": progress.step,
            "epoch": epoch_index + 1,
            "train_loss": train_metrics.loss,
            "train_mean_token_accuracy": train_metrics.mean_token_accuracy,
            "tokens_per_second": int(batch["attention_mask"].sum()) / step_seconds,
        }
        if stop.is_set():  # stopped during this step: no validation pass and no checkpoint, which could take long
            emit(step_event)
            return False
        if not _checkpoint_due(progress.step, job.checkpoint_every, steps_per_epoch, total_steps):
            emit(step_event)
            continue
        metrics: dict[str, Any] = {
            "step": progress.step,
            "train_loss": train_metrics.loss,
            "train_mean_token_accuracy": train_metrics.mean_token_accuracy,
        }
        if validation:
            valid_metrics = _evaluate(model, validation, job.batch_size, pad_id, device)
            _check_converging(progress.step, {"validation loss": valid_metrics.loss}, model)
            valid = {"valid_loss": valid_metrics.loss, "valid_mean_token_accuracy": valid_metrics.mean_token_accuracy}
            metrics |= valid
            step_event |= valid
        emit(step_event)
        state = _trainer_state(progress, len(training), job.batch_size, optimizer, scheduler, data_order)
        path = _write_checkpoint(job_dir, progress.step, model, state)
        emit(
            {
                "event": "checkpoint",
                "step": progress.step,
                "epoch": epoch_index + 1,
                "path": str(path),
                "metrics": metrics,
            }
        )
    emit({"event": "done", "step": progress.step})
    return True


def _check_converging(step: int, losses: dict[str, float], model: Any) -> None:
    """Ends a run whose loss or weights are no longer finite numbers (too high a learning rate): every later step
    would stay NaN, and the adapter saved from it would make the served model answer nothing but noise."""
    broken = next((name for name, loss in losses.items() if not math.isfinite(loss)), None)
    if broken is None and not all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.requires_grad):
        broken = "adapter weights"
    if broken is not None:
        raise _diverged(step, f"the {broken} became infinite or NaN")


def _diverged(step: int, why: str) -> InvalidTrainingInputError:
    return InvalidTrainingInputError(
        "training_diverged",
        f"Training diverged at step {step}: {why}. Try a lower learning_rate_multiplier.",
        param="hyperparameters.learning_rate_multiplier",
    )


def _checkpoint_due(step: int, checkpoint_every: int, steps_per_epoch: int, total_steps: int) -> bool:
    return (checkpoint_every > 0 and step % checkpoint_every == 0) or step % steps_per_epoch == 0 or step == total_steps


def _read(path: Path, code: str) -> list[ChatExample]:
    try:
        return read_examples(path)
    except InvalidExamplesError as error:
        raise InvalidTrainingInputError(code, str(error)) from error


def _tokenize(tokenizer: Any, examples: list[ChatExample], max_length: int, code: str) -> list[TokenizedExample]:
    try:
        return tokenize_examples(tokenizer, examples, max_length)
    except InvalidExamplesError as error:
        raise InvalidTrainingInputError(code, str(error)) from error


def _weights(job: TrainingJob) -> dict[str, Any]:
    """from_pretrained's arguments for the job's weights (and tokenizer)."""
    if job.train_from is not None:
        return {"pretrained_model_name_or_path": job.train_from}
    return {"pretrained_model_name_or_path": job.base_gguf.parent, "gguf_file": job.base_gguf.name}


@contextmanager
def _each_gguf_read_once() -> Iterator[None]:
    """Within the block, a GGUF is parsed once and each tensor-name map built once.

    transformers parses the GGUF's whole metadata for the tokenizer's config, again for the model's config and again
    for the weights, and the chat template is a fourth parse (gguf-py reads the vocabulary token by token in Python:
    3-5 s a time for SmolLM2's 49,152 tokens), and transformers builds
    gguf-py's tensor-name map anew for every module of the model (397 times, 8 s). Both are pure functions of their
    arguments; sharing them took SmolLM2's load from ~28 s to ~8 s before the first step of every job and resume.
    transformers imports both from `gguf` when it calls them, so the module's attributes are what it gets."""
    make_reader, make_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], gguf.GGUFReader] = {}

    def shared_reader(path: os.PathLike[str] | str, mode: str = "r") -> gguf.GGUFReader:
        key = (os.path.realpath(path), mode)
        if key not in readers:
            readers[key] = make_reader(path, mode)  # type: ignore[arg-type]
        return readers[key]

    gguf.GGUFReader = shared_reader  # type: ignore[misc,assignment]
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(make_name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = make_reader, make_name_map  # type: ignore[misc]


def _gguf_chat_template(path: Path) -> str | None:
    field = gguf.GGUFReader(path).get_field(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    return str(field.contents()) if field is not None else None


def _lora_model(job: TrainingJob, device: torch.device) -> Any:
    base = AutoModelForCausalLM.from_pretrained(**_weights(job), dtype=torch.float32)
    # Seeded right before the adapters are made, so their initial values depend on the seed alone.
    _seed_everything(job.seed)
    config = LoraConfig(
        r=job.lora_rank,
        lora_alpha=2 * job.lora_rank,
        lora_dropout=LORA_DROPOUT,
        target_modules="all-linear",  # every projection of every block; peft leaves the output head out
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config).to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("LoRA rank %d: %d trainable parameters", job.lora_rank, trainable)
    return model


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # the CPU generator and every CUDA device's


def _warmup_then_constant(step: int) -> float:
    return min(1.0, (step + 1) / WARMUP_STEPS)


def _collate(examples: list[TokenizedExample], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    length = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    for row, example in enumerate(examples):
        size = len(example.input_ids)
        input_ids[row, :size] = torch.tensor(example.input_ids)
        labels[row, :size] = torch.tensor(example.labels)
        attention_mask[row, :size] = 1
    return {"input_ids": input_ids.to(device), "labels": labels.to(device), "attention_mask": attention_mask.to(device)}


def _loss_and_accuracy(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """Mean cross-entropy over the batch's trained tokens, and how many of them the model's argmax got right.
    Computed here rather than by transformers so a batch with no trained token gives 0, not NaN."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    trained = targets != IGNORE_INDEX
    counted = int(trained.sum())
    loss_sum = functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    correct = int(((logits.argmax(dim=-1) == targets) & trained).sum())
    return loss_sum / max(counted, 1), correct, counted


@torch.no_grad()
def _evaluate(
    model: Any, examples: list[TokenizedExample], batch_size: int, pad_id: int, device: torch.device
) -> _Metrics:
    """Token-weighted loss and accuracy over the whole validation set (in eval mode: no dropout, no RNG drawn)."""
    model.eval()
    loss_sum, correct, counted = 0.0, 0, 0
    for batch_examples in _chunks(examples, batch_size):
        loss, batch_correct, batch_counted = _loss_and_accuracy(model, _collate(batch_examples, pad_id, device))
        loss_sum += float(loss) * batch_counted
        correct += batch_correct
        counted += batch_counted
    model.train()
    return _Metrics(loss=loss_sum / max(counted, 1), mean_token_accuracy=correct / max(counted, 1))


def _chunks(items: list[TokenizedExample], size: int) -> Iterator[list[TokenizedExample]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _trainer_state(
    progress: _Progress,
    examples: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data_order: torch.Generator,
) -> dict[str, Any]:
    return {
        "step": progress.step,
        "epoch_order": progress.epoch_order,
        "examples": examples,
        "batch_size": batch_size,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            # the state after this epoch's draw: a resumed run reuses `epoch_order` and draws the next epoch from here
            "data_order": data_order.get_state(),
        },
    }


def _remove_unfinished_checkpoints(job_dir: Path) -> None:
    """Temporary folders of a run killed while writing a checkpoint: never a checkpoint, only its leftovers."""
    for leftover in job_dir.glob(".ckpt-step-*.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def _write_checkpoint(job_dir: Path, step: int, model: Any, state: dict[str, Any]) -> Path:
    """Write ckpt-step-N complete under a temporary name, then rename it: a kill at any moment leaves either no
    folder or a whole one."""
    final = job_dir / f"ckpt-step-{step}"
    temporary = job_dir / f".ckpt-step-{step}.tmp"
    temporary.mkdir(parents=True)
    adapter = {name: tensor.detach().cpu().contiguous() for name, tensor in get_peft_model_state_dict(model).items()}
    save_file(adapter, str(temporary / ADAPTER_FILE))
    model.peft_config["default"].save_pretrained(str(temporary))  # adapter_config.json: peft can load the folder
    torch.save(state, temporary / TRAINER_STATE_FILE)
    if final.exists():  # left by an earlier attempt that ran past the step this one resumed from
        shutil.rmtree(final)
    os.rename(temporary, final)
    return final


def _restore(
    job: TrainingJob,
    examples: int,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    data_order: torch.Generator,
    device: torch.device,
) -> _Progress:
    assert job.resume_from is not None
    set_peft_model_state_dict(model, load_file(str(job.resume_from / ADAPTER_FILE), device=str(device)))
    # Our own file: it holds Python and numpy RNG states, which the weights-only unpickler refuses.
    state = torch.load(job.resume_from / TRAINER_STATE_FILE, map_location="cpu", weights_only=False)
    if (state["examples"], state["batch_size"]) != (examples, job.batch_size):
        raise ValueError(
            f"{job.resume_from} was written for {state['examples']} examples in batches of {state['batch_size']}; "
            f"this job has {examples} in batches of {job.batch_size}"
        )
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    data_order.set_state(rng["data_order"])
    return _Progress(step=int(state["step"]), epoch_order=list(state["epoch_order"]))


def _since(started: float) -> float:
    return time.perf_counter() - started
