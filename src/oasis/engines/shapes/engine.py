"""Engine kind `shapes`: oasis's own small text-to-image model (see MODEL_CARD.md), in numpy.

It draws at 32 pixels a side (or the requested aspect at 32 pixels high) and the picture is enlarged to the size
asked for. Sampling integrates the rectified flow with Euler steps and classifier-free guidance. Edits redraw the
masked cells while the rest is held to the source noised to each step's level (RePaint's replacement, without
its resampling); variations noise the source part way and draw it back without a caption (SDEdit), so the
composition and colours stay and the details change.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Collection
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from oasis.engines.image import EditJob, GenerationJob, Look, Previews, VariationJob
from oasis.engines.options import ShapesOptions
from oasis.engines.shapes import network
from oasis.engines.shapes.tokens import Tokenizer
from oasis.settings import ModelSpec

DEFAULT_WEIGHTS = "shapes-32.npz"


class ShapesModel:
    """The weights and the sampler; usable without a server (the tests and the benchmark drive it directly)."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            with resources.as_file(resources.files("oasis.engines.shapes.weights").joinpath(DEFAULT_WEIGHTS)) as p:
                archive = np.load(p)
                self._read(archive)
        else:
            self._read(np.load(path))

    def _read(self, archive: Any) -> None:
        self.config = json.loads(bytes(archive["__config__"]).decode())
        self.params = {k: archive[k].astype(np.float32) for k in archive.files if k != "__config__"}
        self.resolution = int(self.config["resolution"])
        self.tokenizer = Tokenizer(self.config["vocabulary"], int(self.config["max_tokens"]))

    def _context(self, prompts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tokens = self.tokenizer.batch(prompts)
        ctx, pooled = network.encode_text(self.params, tokens, int(self.config["text_layers"]))
        return ctx, tokens != 0, pooled

    def sample(
        self,
        prompt: str,
        n: int,
        rng: np.random.Generator,
        *,
        steps: int,
        guidance: float,
        shape: tuple[int, int] | None = None,
        start: np.ndarray | None = None,
        start_time: float = 1.0,
        known: np.ndarray | None = None,
        keep: np.ndarray | None = None,
        previews: Callable[[np.ndarray], None] | None = None,
        preview_after: Collection[int] = (),
    ) -> np.ndarray:
        """n images (n, H, W, 3) uint8 at the model's resolution.

        `start` (H, W, 3 in [-1, 1]) noised to `start_time` begins the flow part way (variations); `known` with
        `keep` (H, W bool) holds those pixels to the known image throughout (edits). `previews` is sent the images
        the flow points at (its estimate of the clean image) after each step counted in `preview_after`."""
        height, width = shape or (self.resolution, self.resolution)
        guided = guidance != 1.0 and prompt != ""
        prompts = [prompt] * n + ([""] * n if guided else [])
        ctx, mask, pooled = self._context(prompts)
        x = rng.standard_normal((n, height, width, 3)).astype(np.float32)
        if start is not None:
            x = (1 - start_time) * start[None] + start_time * x
        times = np.linspace(start_time, 0.0, steps + 1, dtype=np.float32)
        for step, (t, t_next) in enumerate(itertools.pairwise(times), start=1):
            if known is not None and keep is not None:
                noised = (1 - t) * known[None] + t * rng.standard_normal(x.shape).astype(np.float32)
                x = np.where(keep[None, :, :, None], noised, x)
            batch = np.concatenate([x, x]) if guided else x
            velocity = network.velocity(self.params, batch, np.full(len(batch), t, np.float32), ctx, mask, pooled)
            if guided:
                conditional, unconditional = velocity[:n], velocity[n:]
                velocity = unconditional + guidance * (conditional - unconditional)
            if previews is not None and step in preview_after:
                previews(_pixels(x - t * velocity, known, keep))  # a rectified flow's x_t - t v is its x_0
            x = x + (t_next - t) * velocity
        return _pixels(x, known, keep)


def _pixels(x: np.ndarray, known: np.ndarray | None, keep: np.ndarray | None) -> np.ndarray:
    """The flow's images ([-1, 1]) as pixels, the known ones kept where an edit keeps them."""
    if known is not None and keep is not None:
        x = np.where(keep[None, :, :, None], known[None], x)
    return np.clip((x + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)


def _enlarge(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC), dtype=np.uint8)


def _shrink(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BOX), dtype=np.uint8)


def _any_in_cell(mask: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """(rows, columns): True for each cell of the grid holding any True pixel of `mask`."""
    height, width = mask.shape
    row_of = np.arange(height) * rows // height
    column_of = np.arange(width) * columns // width
    cells = np.zeros((rows, columns), dtype=bool)
    ys, xs = np.nonzero(mask)
    cells[row_of[ys], column_of[xs]] = True
    return cells


def _as_input(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.float32) / 127.5 - 1.0


class ShapesEngine:
    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.options = ShapesOptions.model_validate(spec.options)
        self._model: ShapesModel | None = None

    async def start(self) -> None:
        import asyncio

        path = Path(self.spec.path).expanduser() if self.spec.path else None
        self._model = await asyncio.to_thread(ShapesModel, path)

    async def close(self) -> None:
        self._model = None

    @property
    def model(self) -> ShapesModel:
        if self._model is None:
            raise RuntimeError("the shapes engine is not started")
        return self._model

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng(int.from_bytes(os.urandom(8), "little"))

    def _steps(self, look: Look) -> int:
        return self.options.hd_steps if look.quality == "hd" else self.options.steps

    def _grid(self, width: int, height: int) -> tuple[int, int]:
        """The model's canvas for an aspect ratio: its resolution on the short side, the long side in proportion
        (a multiple of 4, as the network halves twice)."""
        side = self.model.resolution
        if width == height:
            return side, side
        if width > height:
            return side, max(side, round(side * width / height / 4) * 4)
        return max(side, round(side * height / width / 4) * 4), side

    @staticmethod
    def _previewed(previews: Previews | None, width: int, height: int, steps: int) -> dict[str, Any]:
        """`sample`'s arguments that send `previews` the images part way, enlarged as the final ones are."""
        if previews is None:
            return {}

        def send(drawn: np.ndarray) -> None:
            previews.send([_enlarge(picture, width, height) for picture in drawn])

        return {"previews": send, "preview_after": previews.after(steps)}

    def generate(self, job: GenerationJob) -> list[np.ndarray]:
        guidance = self.options.guidance if job.look.style == "vivid" else self.options.natural_guidance
        steps = self._steps(job.look)
        drawn = self.model.sample(
            job.prompt,
            job.n,
            self._rng(),
            steps=steps,
            guidance=guidance,
            shape=self._grid(job.width, job.height),
            **self._previewed(job.previews, job.width, job.height, steps),
        )
        return [_enlarge(picture, job.width, job.height) for picture in drawn]

    def edit(self, job: EditJob) -> list[np.ndarray]:
        height, width = job.image.shape[:2]
        grid_h, grid_w = self._grid(width, height)
        small = _as_input(_shrink(job.image, grid_w, grid_h))
        # a cell is redrawn when any of its pixels is: the edge of the hole is drawn anew, not kept half-old
        keep = ~_any_in_cell(job.repaint, grid_h, grid_w)
        steps = self._steps(job.look)
        drawn = self.model.sample(
            job.prompt,
            job.n,
            self._rng(),
            steps=steps,
            guidance=self.options.guidance,
            shape=(grid_h, grid_w),
            known=small,
            keep=keep,
            **self._previewed(job.previews, width, height, steps),
        )
        return [_enlarge(picture, width, height) for picture in drawn]

    def vary(self, job: VariationJob) -> list[np.ndarray]:
        height, width = job.image.shape[:2]
        grid_h, grid_w = self._grid(width, height)
        strength = self.options.variation_strength
        steps = self._steps(job.look)
        drawn = self.model.sample(
            job.prompt,
            job.n,
            self._rng(),
            steps=steps,
            guidance=self.options.guidance if job.prompt else 1.0,
            shape=(grid_h, grid_w),
            start=_as_input(_shrink(job.image, grid_w, grid_h)),
            start_time=strength / 2 if job.fidelity == "high" else strength,
            **self._previewed(job.previews, width, height, steps),
        )
        return [_enlarge(picture, width, height) for picture in drawn]
