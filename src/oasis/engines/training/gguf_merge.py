"""Merge a LoRA adapter (peft's safetensors folder) into a copy of its base GGUF, with numpy and gguf-py only.

Only the tensors the adapter touches change; every other tensor and all metadata are copied byte for byte, so
llama.cpp serves the result like the base. For each touched weight W (GGUF row order) the copy holds
W + permute(B @ A * scale), computed in float32:

- permute: llama.cpp stores attn_q/attn_k rows interleaved for its rope, while peft trained on transformers' rows.
  The permutation is linear, so permuting the delta alone is enough.
- type: a float base (F32, F16, BF16) keeps its type. A quantized base tensor becomes Q8_0, never its own 4-bit type:
  LoRA deltas are ~100x smaller than a Q4 step, so re-quantizing rounds nearly every weight back to its old code and
  the fine-tune silently disappears. Q8_0's finer grid keeps it (llama.cpp mixes tensor types freely).

The name map and the q/k permutation are per architecture: `ARCHITECTURES` lists the ones whose layout is checked
against llama.cpp (tests/engines_training/test_architectures.py compares llama.cpp's logits with transformers'
for each). No torch here, so the merge runs in a process that never loads a model.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import load_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Architecture:
    tensor_names: gguf.MODEL_ARCH
    permuted_qk: bool  # convert_hf_to_gguf permutes attn_q/attn_k rows for llama.cpp's rope (its LlamaModel.permute)


# The GGUF's general.architecture -> how its tensors relate to transformers'. Llama's covers Mistral and the other
# models converted as `llama`; the Qwen ones keep transformers' row order (their rope is the NEOX kind).
ARCHITECTURES = {
    "llama": Architecture(gguf.MODEL_ARCH.LLAMA, permuted_qk=True),
    "qwen2": Architecture(gguf.MODEL_ARCH.QWEN2, permuted_qk=False),
    "qwen3": Architecture(gguf.MODEL_ARCH.QWEN3, permuted_qk=False),
}
_FLOAT_TYPES = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}
_PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LowRankUpdate:
    """One adapted weight: delta = up @ down * scale (peft's lora_B @ lora_A * alpha / r)."""

    down: np.ndarray  # lora_A, shape (rank, in_features)
    up: np.ndarray  # lora_B, shape (out_features, rank)
    scale: float

    def delta(self) -> np.ndarray:
        return (self.up.astype(np.float32) @ self.down.astype(np.float32)) * np.float32(self.scale)


def merge_adapter(base_gguf: Path, adapter_dir: Path, out: Path) -> None:
    """Write `out`: a copy of `base_gguf` with the adapter merged in. Written to a temporary file beside `out` and
    renamed, so `out` is either absent or complete."""
    started = time.perf_counter()
    reader = gguf.GGUFReader(base_gguf)
    problem = _unmergeable(reader, base_gguf.name)
    if problem:
        raise ValueError(problem)
    architecture = _field(reader, gguf.Keys.General.ARCHITECTURE)
    permuted_qk = ARCHITECTURES[architecture].permuted_qk
    head_count = int(_field(reader, gguf.Keys.Attention.HEAD_COUNT.format(arch=architecture)))
    head_count_kv = int(_field(reader, gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=architecture)) or head_count)
    updates = _updates_by_tensor(reader, read_adapter(adapter_dir), architecture)

    temporary = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    writer = gguf.GGUFWriter(temporary, arch=architecture, endianess=reader.endianess)
    writer.data_alignment = reader.alignment  # the general.alignment field itself is copied with the rest
    try:
        _copy_metadata(reader, writer)
        merged_types: dict[str, gguf.GGMLQuantizationType] = {}
        for tensor in reader.tensors:
            if tensor.name in updates:
                rows, columns = (int(size) for size in reversed(tensor.shape))  # GGUF lists dimensions innermost first
                merged_type = merged_tensor_type(tensor.tensor_type, columns)
                merged_types[tensor.name] = merged_type
                byte_shape = gguf.quants.quant_shape_to_byte_shape((rows, columns), merged_type)
                writer.add_tensor_info(tensor.name, byte_shape, np.dtype(np.uint8), math.prod(byte_shape), merged_type)
            else:
                writer.add_tensor_info(
                    tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, tensor.tensor_type
                )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        # One tensor at a time: memory stays at one dequantized weight, whatever the model's size.
        for tensor in reader.tensors:
            if tensor.name not in updates:
                writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
                continue
            tensor_kind, update = updates[tensor.name]
            delta = update.delta()
            if permuted_qk and tensor_kind == gguf.MODEL_TENSOR.ATTN_Q:
                delta = permute_for_gguf(delta, head_count)
            elif permuted_qk and tensor_kind == gguf.MODEL_TENSOR.ATTN_K:
                delta = permute_for_gguf(delta, head_count_kv)
            weights = gguf.dequantize(tensor.data, tensor.tensor_type)
            if weights.shape != delta.shape:
                raise ValueError(f"{tensor.name}: the adapter's delta is {delta.shape}, the weight is {weights.shape}")
            writer.write_tensor_data(gguf.quants.quantize(weights + delta, merged_types[tensor.name]))
        writer.close()
        os.replace(temporary, out)
    except BaseException:
        writer.close()
        temporary.unlink(missing_ok=True)
        raise
    logger.info(
        "merged %d tensors of %s into %s in %.1f s", len(updates), adapter_dir, out, time.perf_counter() - started
    )


def training_problem(base_gguf: Path, train_from: Path | None) -> str | None:
    """Why a LoRA trained for this model could not be merged into `base_gguf` (None when it can): checked before
    training, so that a job fails at once rather than after hours. With `train_from`, the Hugging Face folder must
    hold the same network as the GGUF: same architecture family, layers, widths, heads and vocabulary (two
    different networks of one shape, or a base and its instruct tune, cannot be told apart this way).

    The answer is kept while neither file changes: gguf-py reads a GGUF's whole metadata in Python, its vocabulary
    token by token (2.7 s for SmolLM2's 49,152 tokens), and every job created asks again."""
    identity = (_file_identity(base_gguf), _file_identity(train_from / "config.json") if train_from else None)
    try:
        if identity[0] is None:
            return _training_problem(base_gguf, train_from)
        return _remembered_training_problem(base_gguf, train_from, identity)
    except _Unreadable as exc:  # not remembered: a permission or a passing I/O failure may be mended
        return str(exc)


class _Unreadable(Exception):
    pass


def _file_identity(path: Path) -> tuple[int, ...] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    # st_ctime_ns too: a chmod or chown changes only it, and no tool can set it back
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


@functools.lru_cache(maxsize=32)
def _remembered_training_problem(base_gguf: Path, train_from: Path | None, identity: object) -> str | None:
    return _training_problem(base_gguf, train_from)


def _training_problem(base_gguf: Path, train_from: Path | None) -> str | None:
    """training_problem's answer; _Unreadable where a file could not be read, which may change without the file
    changing."""
    try:
        reader = gguf.GGUFReader(base_gguf)
    except Exception as exc:  # gguf-py reports a damaged file in many ways
        raise _Unreadable(f"its GGUF cannot be read ({type(exc).__name__}: {exc})") from exc
    problem = _unmergeable(reader, base_gguf.name)
    if problem or train_from is None:
        return problem
    config_file = train_from / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _Unreadable(f"its train_from folder is not a Hugging Face model folder ({config_file}: {exc})") from exc
    except ValueError as exc:
        return f"its train_from folder is not a Hugging Face model folder ({config_file}: {exc})"
    if not isinstance(config, dict) or config.get("text_config") is not None:
        return "its train_from folder is not a language model's (a multimodal folder: give its text model's)"
    architecture = _field(reader, gguf.Keys.General.ARCHITECTURE)
    heads = _field(reader, f"{architecture}.attention.head_count")
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    expected = {
        "model_type": (config.get("model_type"), architecture),
        "num_hidden_layers": (config.get("num_hidden_layers"), _field(reader, f"{architecture}.block_count")),
        "hidden_size": (config.get("hidden_size"), _field(reader, f"{architecture}.embedding_length")),
        "intermediate_size": (config.get("intermediate_size"), _field(reader, f"{architecture}.feed_forward_length")),
        "num_attention_heads": (config.get("num_attention_heads"), heads),
        "num_key_value_heads": (
            config.get("num_key_value_heads") or config.get("num_attention_heads"),
            _field(reader, f"{architecture}.attention.head_count_kv") or heads,
        ),
        "vocab_size": (
            config.get("vocab_size"),
            _field(reader, f"{architecture}.vocab_size") or (len(tokens.data) if tokens is not None else None),
        ),
    }
    mismatches = [
        f"{key} {folder_value!r} where the GGUF has {gguf_value!r}"
        for key, (folder_value, gguf_value) in expected.items()
        if folder_value != gguf_value and not (key == "model_type" and _same_family(folder_value, gguf_value))
    ]
    if mismatches:
        return f"its train_from folder holds another model than its GGUF: {'; '.join(mismatches)}"
    return None


def _same_family(model_type: Any, architecture: str) -> bool:
    # transformers' model_type and the GGUF's architecture name agree for these, except that Mistral's folders are
    # converted to `llama` GGUFs.
    return architecture == "llama" and model_type == "mistral"


def _unmergeable(reader: gguf.GGUFReader, name: str) -> str | None:
    architecture = _field(reader, gguf.Keys.General.ARCHITECTURE)
    if architecture not in ARCHITECTURES:
        return (
            f"a LoRA adapter cannot be merged into a GGUF of architecture {architecture!r}: the supported ones are "
            f"{', '.join(ARCHITECTURES)}"
        )
    if reader.endianess != gguf.GGUFEndian.LITTLE:
        return f"{name} is a big-endian GGUF; only little-endian files can be merged"
    return None


def _updates_by_tensor(
    reader: gguf.GGUFReader, updates: dict[str, LowRankUpdate], architecture: str
) -> dict[str, tuple[gguf.MODEL_TENSOR, LowRankUpdate]]:
    """{GGUF tensor name: (its kind, its update)}: model.layers.3.self_attn.q_proj.weight -> blk.3.attn_q.weight."""
    block_count = int(_field(reader, gguf.Keys.LLM.BLOCK_COUNT.format(arch=architecture)))
    name_map = gguf.get_tensor_name_map(ARCHITECTURES[architecture].tensor_names, block_count)
    by_tensor = {}
    for hf_name, update in updates.items():
        found = name_map.get_type_and_name(hf_name, try_suffixes=(".weight",))
        if found is None:
            raise ValueError(f"the adapter changes {hf_name}, which has no tensor in a {architecture} GGUF")
        tensor_kind, gguf_name = found
        by_tensor[gguf_name] = (tensor_kind, update)
    missing = set(by_tensor) - {tensor.name for tensor in reader.tensors}
    if missing:
        raise ValueError(f"the adapter changes tensors that this {architecture} GGUF does not have: {sorted(missing)}")
    return by_tensor


def read_adapter(adapter_dir: Path) -> dict[str, LowRankUpdate]:
    """peft's adapter_model.safetensors + adapter_config.json -> {transformers weight name: its update}, e.g.
    `model.layers.3.self_attn.q_proj.weight`. Only plain LoRA on linear layers can be merged into a GGUF."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    for option in ("use_dora", "fan_in_fan_out"):
        if config.get(option):
            raise ValueError(f"adapter in {adapter_dir} uses {option}, which this merge does not handle")
    for option in ("rank_pattern", "alpha_pattern"):
        if config.get(option):
            raise ValueError(f"adapter in {adapter_dir} sets {option} (per-module ranks or alphas), not handled")
    rank, alpha = int(config["r"]), float(config["lora_alpha"])
    scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    targets = config.get("target_modules")

    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    updates = {}
    for key in tensors:
        if ".lora_A." not in key:
            if ".lora_B." not in key:
                raise ValueError(f"adapter tensor {key} is not a LoRA A/B matrix; it cannot be merged into a GGUF")
            continue
        module = key.removeprefix(_PEFT_PREFIX).split(".lora_A.")[0]
        # peft's own matching: a target is a module's full name or its last parts (few modules: full names)
        if isinstance(targets, list) and not any(module == t or module.endswith(f".{t}") for t in targets):
            raise ValueError(f"adapter tensor {key} is for a module outside target_modules {targets}")
        down, up = tensors[key], tensors[key.replace(".lora_A.", ".lora_B.")]
        if down.shape[0] != rank or up.shape[1] != rank:
            raise ValueError(f"adapter tensor {key}: rank {down.shape[0]}, but adapter_config.json says r={rank}")
        updates[f"{module}.weight"] = LowRankUpdate(down=down, up=up, scale=scale)
    if not updates:
        raise ValueError(f"adapter in {adapter_dir} holds no LoRA tensors")
    return updates


def merged_tensor_type(base_type: gguf.GGMLQuantizationType, row_length: int) -> gguf.GGMLQuantizationType:
    """The type a changed tensor is written in (see the module docstring for why not the base's own 4-bit type)."""
    if base_type in _FLOAT_TYPES:
        return base_type
    block_size, _ = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0]
    if row_length % block_size == 0:
        return gguf.GGMLQuantizationType.Q8_0
    return gguf.GGMLQuantizationType.F16  # rows that Q8_0 blocks cannot tile


def permute_for_gguf(weights: np.ndarray, head_count: int) -> np.ndarray:
    """transformers' q/k row order -> llama.cpp's (its convert_hf_to_gguf `LlamaModel.permute`). Pass the query head
    count for attn_q and the key/value head count for attn_k."""
    rows = weights.shape[0]
    return (
        weights.reshape(head_count, 2, rows // head_count // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def unpermute_from_gguf(weights: np.ndarray, head_count: int) -> np.ndarray:
    """The inverse of `permute_for_gguf` (transformers' `_reverse_permute_weights` when it loads a GGUF)."""
    rows = weights.shape[0]
    return (
        weights.reshape(head_count, rows // head_count // 2, 2, *weights.shape[1:])
        .swapaxes(2, 1)
        .reshape(weights.shape)
    )


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return field.contents() if field is not None else None


def _copy_metadata(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> None:
    # As gguf-py's gguf_new_metadata.py does: the writer adds the architecture itself; GGUF.* are the reader's
    # virtual fields (version, counts).
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        value_type = field.types[0]
        sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
