"""Train oasis's default text-to-image model: a small rectified-flow U-Net at 32x32 with a text encoder trained
alongside, on synthetic captioned scenes of shapes (oasis.engines.shapes.scenes). Seeded and resumable: run it
again with the same --work folder and it continues from the last checkpoint.

    python scripts/train_image_model.py --work /tmp/shapes-train --steps 6000
        --out src/oasis/engines/shapes/weights/shapes-32.npz

`--init weights.npz` starts from exported weights (a second stage: a fresh optimizer and schedule, usually with
another --seed so that it sees new scenes and captions).

Needs torch (the `train` extra). The network mirrors oasis.engines.shapes.network parameter for parameter; the
script ends by checking that numpy and torch agree on the exported weights.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oasis.engines.shapes import network, scenes
from oasis.engines.shapes.tokens import Tokenizer

RESOLUTION = 32
TEXT_DIM = 96
TEXT_LAYERS = 2
MAX_TOKENS = 24
EMB = 128
C1, C2, C3 = 32, 64, 96


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    batch, n, channels = q.shape
    m = k.shape[1]
    head = channels // network.HEADS
    qh = q.reshape(batch, n, network.HEADS, head).transpose(1, 2)
    kh = k.reshape(batch, m, network.HEADS, head).transpose(1, 2)
    vh = v.reshape(batch, m, network.HEADS, head).transpose(1, 2)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return out.transpose(1, 2).reshape(batch, n, channels)


class TextBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        x = x + self.proj(attention(q, k, v, mask))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


class TextEncoder(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, TEXT_DIM)
        self.pos = nn.Parameter(torch.randn(MAX_TOKENS, TEXT_DIM) * 0.02)
        self.layers = nn.ModuleList(TextBlock(TEXT_DIM) for _ in range(TEXT_LAYERS))
        self.ln_f = nn.LayerNorm(TEXT_DIM)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = tokens != 0
        x = self.tok(tokens) + self.pos[: tokens.shape[1]]
        for layer in self.layers:
            x = layer(x, mask)
        x = self.ln_f(x)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return x, mask, pooled


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(network.GROUPS, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(EMB, 2 * cout)
        self.norm2, self.conv2 = nn.GroupNorm(network.GROUPS, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb).chunk(2, dim=-1)
        h = self.norm2(h) * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        h = self.conv2(F.silu(h))
        return (x if self.skip is None else self.skip(x)) + h


class CrossAttention(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(network.GROUPS, channels)
        self.q, self.out = nn.Linear(channels, channels), nn.Linear(channels, channels)
        self.k, self.v = nn.Linear(TEXT_DIM, channels), nn.Linear(TEXT_DIM, channels)
        nn.init.zeros_(self.out.weight)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).flatten(2).transpose(1, 2)
        out = self.out(attention(self.q(h), self.k(ctx), self.v(ctx), mask))
        return x + out.transpose(1, 2).reshape(x.shape)


class SelfAttention(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(network.GROUPS, channels)
        self.qkv, self.out = nn.Linear(channels, 3 * channels), nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        return x + self.out(attention(q, k, v, None)).transpose(1, 2).reshape(x.shape)


class ShapesModel(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.text = TextEncoder(vocab)
        self.time1, self.time2 = nn.Linear(64, EMB), nn.Linear(EMB, EMB)
        self.text_proj = nn.Linear(TEXT_DIM, EMB)
        self.conv_in = nn.Conv2d(3, C1, 3, padding=1)
        self.res32 = ResBlock(C1, C1)
        self.down32 = nn.Conv2d(C1, C1, 3, stride=2, padding=1)
        self.res16, self.attn16 = ResBlock(C1, C2), CrossAttention(C2)
        self.down16 = nn.Conv2d(C2, C2, 3, stride=2, padding=1)
        self.res8, self.attn8 = ResBlock(C2, C3), CrossAttention(C3)
        self.mid1, self.mid_self, self.mid_cross, self.mid2 = (
            ResBlock(C3, C3),
            SelfAttention(C3),
            CrossAttention(C3),
            ResBlock(C3, C3),
        )
        self.up8, self.upattn8 = ResBlock(2 * C3, C3), CrossAttention(C3)
        self.upsample8 = nn.Conv2d(C3, C2, 3, padding=1)
        self.up16, self.upattn16 = ResBlock(2 * C2, C2), CrossAttention(C2)
        self.upsample16 = nn.Conv2d(C2, C1, 3, padding=1)
        self.up32 = ResBlock(2 * C1, C1)
        self.norm_out, self.conv_out = nn.GroupNorm(network.GROUPS, C1), nn.Conv2d(C1, 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)

    def forward(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        ctx, mask, pooled = self.text(tokens)
        features = torch.from_numpy(network.timestep_features(t.detach().cpu().numpy()))
        emb = F.silu(self.time2(F.silu(self.time1(features))) + self.text_proj(pooled))
        h = self.conv_in(x)
        s32 = self.res32(h, emb)
        h = self.res16(self.down32(s32), emb)
        s16 = self.attn16(h, ctx, mask)
        h = self.res8(self.down16(s16), emb)
        s8 = self.attn8(h, ctx, mask)
        h = self.mid2(self.mid_cross(self.mid_self(self.mid1(s8, emb)), ctx, mask), emb)
        h = self.upattn8(self.up8(torch.cat([h, s8], 1), emb), ctx, mask)
        h = self.upsample8(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.upattn16(self.up16(torch.cat([h, s16], 1), emb), ctx, mask)
        h = self.upsample16(F.interpolate(h, scale_factor=2, mode="nearest"))
        h = self.up32(torch.cat([h, s32], 1), emb)
        return self.conv_out(F.silu(self.norm_out(h)))


def build_dataset(count: int, seed: int) -> tuple[list[scenes.Scene], np.ndarray]:
    rng = random.Random(seed)
    chosen: list[scenes.Scene] = []
    images = np.zeros((count, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    while len(chosen) < count:
        scene = scenes.random_scene(rng)
        try:
            images[len(chosen)] = scenes.render(scene, RESOLUTION, rng)
        except ValueError:
            continue
        chosen.append(scene)
    return chosen, images


def export(model: nn.Module, tokenizer: Tokenizer, path: Path, meta: dict[str, object]) -> None:
    arrays = {k: v.detach().cpu().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    config = {
        "resolution": RESOLUTION,
        "text_layers": TEXT_LAYERS,
        "max_tokens": MAX_TOKENS,
        "vocabulary": tokenizer.words[3:],
        **meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, __config__=np.frombuffer(json.dumps(config).encode(), dtype=np.uint8), **arrays)
    tmp.replace(path)


def check_numpy_agrees(model: nn.Module, tokenizer: Tokenizer) -> float:
    """Largest difference between torch and the numpy port on a batch of real captions."""
    params = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    texts = ["a red circle on the left", "", "two blue stars at the top on a black background"]
    tokens = tokenizer.batch(texts)
    generator = np.random.default_rng(0)
    x = generator.standard_normal((len(texts), RESOLUTION, RESOLUTION, 3)).astype(np.float32)
    t = np.asarray([0.9, 0.5, 0.1], dtype=np.float32)
    ctx, pooled = network.encode_text(params, tokens, TEXT_LAYERS)
    ours = network.velocity(params, x, t, ctx, tokens != 0, pooled)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t), torch.from_numpy(tokens))
    return float(np.abs(ours - theirs.permute(0, 2, 3, 1).numpy()).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="checkpoints go here; rerun to resume")
    parser.add_argument("--out", type=Path, required=True, help="the exported weights (.npz)")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dataset", type=int, default=40000, help="scenes rendered once, re-captioned each time")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--init", type=Path, help="start from these exported weights (.npz) instead of random ones")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.work.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(scenes.vocabulary(), MAX_TOKENS)
    started = time.time()
    chosen, images = build_dataset(args.dataset, args.seed)
    print(f"dataset: {len(chosen)} scenes rendered in {time.time() - started:.0f} s", flush=True)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)

    model = ShapesModel(len(tokenizer.words))
    stages: list[dict[str, object]] = []
    if args.init is not None:
        with np.load(args.init) as archive:
            earlier = json.loads(bytes(archive["__config__"]).decode())
            if earlier["vocabulary"] != tokenizer.words[3:]:
                sys.exit(f"{args.init} was trained on another vocabulary")
            model.load_state_dict({k: torch.from_numpy(archive[k].astype(np.float32)) for k in model.state_dict()})
        stages = [*earlier.get("stages", []), {k: earlier[k] for k in ("steps", "seed", "train_seconds", "final_loss")}]
        print(f"starting from {args.init} ({earlier['steps']} steps)", flush=True)
    ema = ShapesModel(len(tokenizer.words))
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}", flush=True)

    step, losses, spent = 0, [], 0.0
    checkpoint = args.work / "checkpoint.pt"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        step, losses, spent = state["step"], state["losses"], state["seconds"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {step}", flush=True)
    # captions and batches drawn from a generator seeded by the step, so a resumed run draws what an unbroken one would
    while step < args.steps:
        tick = time.time()
        rng = random.Random(args.seed * 1_000_003 + step)
        index = [rng.randrange(len(chosen)) for _ in range(args.batch)]
        texts = ["" if rng.random() < 0.1 else scenes.caption(chosen[i], rng) for i in index]
        tokens = torch.from_numpy(tokenizer.batch(texts))
        x0 = pixels[index]
        noise = torch.randn_like(x0)
        t = torch.sigmoid(torch.randn(args.batch))  # logit-normal: most steps where the picture is decided
        xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * noise
        loss = F.mse_loss(model(xt, t, tokens), noise - x0)
        warmup = min(1.0, (step + 1) / 200)
        cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in optimizer.param_groups:
            group["lr"] = args.lr * warmup * cosine
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                e.lerp_(p, 1 - decay)
        step += 1
        spent += time.time() - tick
        losses.append(loss.item())
        if step % 50 == 0:
            print(f"step {step} loss {np.mean(losses[-50:]):.4f} {spent / step:.2f} s/step", flush=True)
        if step % args.save_every == 0 or step == args.steps:
            state = {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "step": step,
                "losses": losses,
                "seconds": spent,
                "torch_rng": torch.get_rng_state(),
            }
            torch.save(state, args.work / "checkpoint.tmp")
            (args.work / "checkpoint.tmp").replace(checkpoint)
            meta = {
                "steps": step,
                "seed": args.seed,
                "train_seconds": round(spent),
                "final_loss": losses[-1],
                "stages": stages,  # the runs these weights started from, oldest first
            }
            export(ema, tokenizer, args.out, meta)
    difference = check_numpy_agrees(ema, tokenizer)
    print(f"numpy vs torch largest difference: {difference:.2e}", flush=True)
    if difference > 1e-3:
        sys.exit("the numpy network does not match the trained one")


if __name__ == "__main__":
    main()
