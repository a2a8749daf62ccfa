"""A Stable Diffusion pipeline folder built from configs with random weights and saved with `save_pretrained`,
so the diffusers engine loads and runs it by path exactly as it would a user's download, without a hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _byte_characters() -> list[str]:
    """GPT-2's (and CLIP's) table of one printable character per byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = [], 0
    for byte in range(256):
        if byte in printable:
            codes.append(byte)
        else:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def clip_tokenizer_files(folder: Path) -> None:
    """A CLIP BPE tokenizer with no merges: every character is a token (the vocabulary CLIP's byte table makes)."""
    characters = _byte_characters()
    vocab = {token: index for index, token in enumerate(characters + [c + "</w>" for c in characters])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def build_tiny_pipeline(folder: Path, *, width: int = 32, seed: int = 0) -> Path:
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(width, width * 2),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
    )
    # the decoder works at full resolution: narrow, so a 1792x1024 test image takes a second, not minutes
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=8,
    )
    text_config = CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=514,
        max_position_embeddings=77,
    )
    text_encoder = CLIPTextModel(text_config)
    tokenizer_folder = folder / "_tokenizer_source"
    clip_tokenizer_files(tokenizer_folder)
    tokenizer = CLIPTokenizer(
        str(tokenizer_folder / "vocab.json"), str(tokenizer_folder / "merges.txt"), model_max_length=77
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    components: dict[str, Any] = {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": scheduler,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    pipeline = StableDiffusionPipeline(**components)
    target = folder / "pipeline"
    pipeline.save_pretrained(target)
    return target
