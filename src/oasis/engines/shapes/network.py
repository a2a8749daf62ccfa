"""The default image model's network in numpy: a small text encoder and a conditional U-Net that predicts a
rectified-flow velocity. numpy so it runs wherever oasis installs (no torch at serve time); the training script
(scripts/train_image_model.py) defines the same network in torch with the same parameter names, and a test holds
the two to the same outputs.

Layout is NHWC throughout: a 3x3 convolution is then one matrix product over the nine shifted images side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

Params = Mapping[str, np.ndarray]

GROUPS = 8
HEADS = 4


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def gelu(x: np.ndarray) -> np.ndarray:
    # the tanh form, as the torch side is built with approximate="tanh"
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def linear(p: Params, name: str, x: np.ndarray) -> np.ndarray:
    y = x @ p[f"{name}.weight"].T
    bias = p.get(f"{name}.bias")
    return y if bias is None else y + bias


def layer_norm(p: Params, name: str, x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p[f"{name}.weight"] + p[f"{name}.bias"]


def group_norm(p: Params, name: str, x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    batch, height, width, channels = x.shape
    grouped = x.reshape(batch, height * width, GROUPS, channels // GROUPS)
    mean = grouped.mean(axis=(1, 3), keepdims=True)
    var = grouped.var(axis=(1, 3), keepdims=True)
    normed = ((grouped - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return normed * p[f"{name}.weight"] + p[f"{name}.bias"]


def conv(p: Params, name: str, x: np.ndarray, stride: int = 1) -> np.ndarray:
    """torch.nn.Conv2d (weight Cout x Cin x k x k, padding k//2) on NHWC input."""
    weight = p[f"{name}.weight"]
    out_channels, in_channels, kernel, _ = weight.shape
    if kernel == 1:
        y = x @ weight.reshape(out_channels, in_channels).T
    else:
        pad = kernel // 2
        padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        batch = x.shape[0]
        height = (x.shape[1] + 2 * pad - kernel) // stride + 1
        width = (x.shape[2] + 2 * pad - kernel) // stride + 1
        # The columns as the k*k shifted images side by side (offset-major, channels innermost): each piece is
        # copied in runs of Cin floats, where windows ordered (Cin, k, k) were gathered a float at a time (2x
        # slower for these sizes).
        shifted = [
            padded[:, dy : dy + stride * height : stride, dx : dx + stride * width : stride]
            for dy in range(kernel)
            for dx in range(kernel)
        ]
        columns = np.concatenate(shifted, axis=-1).reshape(batch * height * width, kernel * kernel * in_channels)
        kernel_rows = weight.transpose(2, 3, 1, 0).reshape(kernel * kernel * in_channels, out_channels)
        y = (columns @ kernel_rows).reshape(batch, height, width, out_channels)
    return y + p[f"{name}.bias"]


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, key_mask: np.ndarray | None) -> np.ndarray:
    """Multi-head attention over (B, N, C) queries and (B, M, C) keys/values; key_mask (B, M) is True where a key
    is real."""
    batch, n, channels = q.shape
    m = k.shape[1]
    head = channels // HEADS
    qh = q.reshape(batch, n, HEADS, head).transpose(0, 2, 1, 3)
    kh = k.reshape(batch, m, HEADS, head).transpose(0, 2, 3, 1)
    vh = v.reshape(batch, m, HEADS, head).transpose(0, 2, 1, 3)
    scores = (qh @ kh) / math.sqrt(head)
    if key_mask is not None:
        scores = np.where(key_mask[:, None, None, :], scores, -1e9)
    scores = scores - scores.max(-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ vh).transpose(0, 2, 1, 3).reshape(batch, n, channels)


def encode_text(p: Params, tokens: np.ndarray, layers: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (B, L), 0 = padding, to (token features (B, L, D), pooled (B, D))."""
    mask = tokens != 0
    x = p["text.tok.weight"][tokens] + p["text.pos"][: tokens.shape[1]]
    for i in range(layers):
        name = f"text.layers.{i}"
        h = layer_norm(p, f"{name}.ln1", x)
        q, k, v = np.split(linear(p, f"{name}.qkv", h), 3, axis=-1)
        x = x + linear(p, f"{name}.proj", attention(q, k, v, mask))
        h = layer_norm(p, f"{name}.ln2", x)
        x = x + linear(p, f"{name}.fc2", gelu(linear(p, f"{name}.fc1", h)))
    x = layer_norm(p, "text.ln_f", x)
    pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1)
    return x, pooled


def timestep_features(t: np.ndarray, dim: int = 64) -> np.ndarray:
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float32) / half)
    angles = (t * 1000.0)[:, None] * freqs[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1).astype(np.float32)


def res_block(p: Params, name: str, x: np.ndarray, emb: np.ndarray) -> np.ndarray:
    h = conv(p, f"{name}.conv1", silu(group_norm(p, f"{name}.norm1", x)))
    scale, shift = np.split(linear(p, f"{name}.emb", emb), 2, axis=-1)
    h = group_norm(p, f"{name}.norm2", h) * (1 + scale[:, None, None]) + shift[:, None, None]
    h = conv(p, f"{name}.conv2", silu(h))
    skip = conv(p, f"{name}.skip", x) if f"{name}.skip.weight" in p else x
    return skip + h


def cross_attention(p: Params, name: str, x: np.ndarray, ctx: np.ndarray, ctx_mask: np.ndarray) -> np.ndarray:
    batch, height, width, channels = x.shape
    h = group_norm(p, f"{name}.norm", x).reshape(batch, height * width, channels)
    out = attention(linear(p, f"{name}.q", h), linear(p, f"{name}.k", ctx), linear(p, f"{name}.v", ctx), ctx_mask)
    return x + linear(p, f"{name}.out", out).reshape(x.shape)


def self_attention(p: Params, name: str, x: np.ndarray) -> np.ndarray:
    batch, height, width, channels = x.shape
    h = group_norm(p, f"{name}.norm", x).reshape(batch, height * width, channels)
    q, k, v = np.split(linear(p, f"{name}.qkv", h), 3, axis=-1)
    return x + linear(p, f"{name}.out", attention(q, k, v, None)).reshape(x.shape)


def upsample(x: np.ndarray) -> np.ndarray:
    return x.repeat(2, axis=1).repeat(2, axis=2)


def velocity(
    p: Params, x: np.ndarray, t: np.ndarray, ctx: np.ndarray, ctx_mask: np.ndarray, pooled: np.ndarray
) -> np.ndarray:
    """The U-Net: images (B, H, W, 3) in [-1, 1] at time t (B,) to the velocity noise - image."""
    emb = linear(p, "time2", silu(linear(p, "time1", timestep_features(t)))) + linear(p, "text_proj", pooled)
    emb = silu(emb)
    h = conv(p, "conv_in", x)
    s32 = res_block(p, "res32", h, emb)
    h = conv(p, "down32", s32, stride=2)
    h = res_block(p, "res16", h, emb)
    s16 = cross_attention(p, "attn16", h, ctx, ctx_mask)
    h = conv(p, "down16", s16, stride=2)
    h = res_block(p, "res8", h, emb)
    s8 = cross_attention(p, "attn8", h, ctx, ctx_mask)
    h = res_block(p, "mid1", s8, emb)
    h = self_attention(p, "mid_self", h)
    h = cross_attention(p, "mid_cross", h, ctx, ctx_mask)
    h = res_block(p, "mid2", h, emb)
    h = res_block(p, "up8", np.concatenate([h, s8], axis=-1), emb)
    h = cross_attention(p, "upattn8", h, ctx, ctx_mask)
    h = conv(p, "upsample8", upsample(h))
    h = res_block(p, "up16", np.concatenate([h, s16], axis=-1), emb)
    h = cross_attention(p, "upattn16", h, ctx, ctx_mask)
    h = conv(p, "upsample16", upsample(h))
    h = res_block(p, "up32", np.concatenate([h, s32], axis=-1), emb)
    return conv(p, "conv_out", silu(group_norm(p, "norm_out", h)))
