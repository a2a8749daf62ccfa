"""The image capability: text-to-image, inpainting and image-to-image. Engines take and return pixels (HxWx3 uint8
arrays at the size asked for); the service decodes and encodes the files, checks every parameter, and keeps the
pixels outside an edit's mask exactly as they were, whatever the engine does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from oasis.engines.base import Engine


@dataclass(frozen=True)
class Look:
    """How hard to work and how literally to follow the prompt: OpenAI's `quality` (standard | hd) and `style`
    (vivid | natural), which each engine maps onto its own steps and guidance."""

    quality: str = "standard"
    style: str = "vivid"


@dataclass(frozen=True)
class Previews:
    """The images as drawn so far, asked for `count` times while drawing (OpenAI's `partial_images`): `send` takes
    the job's n images (HxWx3 uint8 at the size asked for), called from the engine's thread. An engine that cannot
    show its work part way sends fewer (OpenAI's final image may come before all its partial ones, too)."""

    count: int
    send: Callable[[list[np.ndarray]], None]

    def after(self, steps: int) -> set[int]:
        """Of a drawing's `steps`, those (counted from 1) after which a preview is sent: spread evenly, none after
        the last (the final image is sent then)."""
        return {steps * index // (self.count + 1) for index in range(1, self.count + 1)} & set(range(1, steps))


@dataclass(frozen=True)
class GenerationJob:
    prompt: str
    n: int
    width: int
    height: int
    look: Look = Look()
    previews: Previews | None = None


@dataclass(frozen=True)
class EditJob:
    image: np.ndarray  # HxWx3 uint8, already at the requested size
    repaint: np.ndarray  # HxW bool: True where the engine is to draw anew
    prompt: str
    n: int
    look: Look = Look()
    previews: Previews | None = None


@dataclass(frozen=True)
class VariationJob:
    image: np.ndarray  # HxWx3 uint8, already at the requested size
    n: int
    # With a prompt, the whole image is redrawn towards it (a GPT image model's edit without a mask); without,
    # a variation of the image alone.
    prompt: str = ""
    look: Look = Look()
    # OpenAI's `input_fidelity`: `high` keeps more of the source (the engine redraws it less far)
    fidelity: str = "low"
    previews: Previews | None = None


@runtime_checkable
class ImageEngine(Engine, Protocol):
    def generate(self, job: GenerationJob) -> list[np.ndarray]:
        """`job.n` images of job.height x job.width. Blocking: the service runs it in a worker thread."""
        ...

    def edit(self, job: EditJob) -> list[np.ndarray]:
        """`job.n` images the size of `job.image`, redrawn where `job.repaint` is True to fit the prompt."""
        ...

    def vary(self, job: VariationJob) -> list[np.ndarray]:
        """`job.n` new images that keep the composition and colours of `job.image` (drawn towards `job.prompt`,
        when there is one)."""
        ...
