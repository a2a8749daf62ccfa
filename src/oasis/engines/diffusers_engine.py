"""Engine kind `diffusers`: any diffusers pipeline folder on this machine (`path`): Stable Diffusion 1.x/2.x,
SDXL, SD-Turbo and LCM-style few-step models. Text-to-image, inpainting and image-to-image share one set of
weights: the inpainting and image-to-image pipelines are built from the loaded one with `from_pipe`.

Nothing is downloaded: the folder is opened with `local_files_only`, so a model missing a part fails at start with
diffusers' own message instead of reaching for a hub.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from oasis.engines.image import EditJob, GenerationJob, Look, Previews, VariationJob
from oasis.engines.options import DiffusersOptions
from oasis.settings import ModelSpec


def _pick_device(choice: str) -> str:
    import torch

    if choice != "auto":
        return choice
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(choice: str, device: str) -> Any:
    import torch

    if choice == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return getattr(torch, choice)


def _pixels(images: Any) -> list[np.ndarray]:
    """A pipeline's `output_type="np"` batch (floats in [0, 1]) as uint8 pictures."""
    return [np.clip(np.asarray(image) * 255 + 0.5, 0, 255).astype(np.uint8) for image in images]


def _previewing(pipeline: Any, previews: Previews | None) -> dict[str, Any]:
    """A pipeline's arguments that send `previews` its latents decoded after the steps they ask for (counted from
    the steps the pipeline runs, which image-to-image makes fewer than asked). None for a pipeline that takes no
    step callback, or whose VAE decodes half-precision latents only after upcasting itself (SDXL's): its image is
    drawn without previews rather than with wrong ones."""
    if previews is None or "callback_on_step_end" not in inspect.signature(pipeline.__call__).parameters:
        return {}
    vae = getattr(pipeline, "vae", None)
    if vae is None or (getattr(vae.config, "force_upcast", False) and str(vae.dtype) == "torch.float16"):
        return {}
    after: set[int] | None = None

    def on_step_end(running: Any, step: int, timestep: Any, values: dict[str, Any]) -> dict[str, Any]:
        nonlocal after
        if after is None:
            after = previews.after(int(getattr(running, "num_timesteps", 0) or 0))
        if step + 1 in after:
            previews.send(_decoded(running, values["latents"]))
        return values

    return {"callback_on_step_end": on_step_end, "callback_on_step_end_tensor_inputs": ["latents"]}


def _decoded(pipeline: Any, latents: Any) -> list[np.ndarray]:
    """Latents part way through as pictures, decoded as the pipeline decodes its last ones."""
    import torch

    vae = pipeline.vae
    scaled = latents.to(vae.dtype) / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None) or 0)
    with torch.no_grad():
        images = vae.decode(scaled, return_dict=False)[0]
    return _pixels(pipeline.image_processor.postprocess(images, output_type="np"))


class DiffusersEngine:
    def __init__(self, spec: ModelSpec) -> None:
        if not spec.path:
            raise ValueError(f"model {spec.id!r}: the diffusers engine needs `path`, a pipeline folder")
        self.spec = spec
        self.options = DiffusersOptions.model_validate(spec.options)
        self._text2image: Any = None
        self._inpaint: Any = None
        self._image2image: Any = None
        self._device = "cpu"

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        self._device = _pick_device(self.options.device)
        path = Path(str(self.spec.path)).expanduser()
        pipeline = AutoPipelineForText2Image.from_pretrained(
            path, torch_dtype=_pick_dtype(self.options.dtype, self._device), local_files_only=True
        )
        if getattr(pipeline, "safety_checker", None) is not None:
            # moderation is the API's own endpoint; a checker here would silently blacken images
            pipeline.safety_checker = None
        if self.options.scheduler:
            import diffusers

            scheduler_class = getattr(diffusers, self.options.scheduler, None)
            if scheduler_class is None:
                raise ValueError(f"option `scheduler`: diffusers has no {self.options.scheduler}")
            pipeline.scheduler = scheduler_class.from_config(pipeline.scheduler.config)
        pipeline = pipeline.to(self._device)
        pipeline.set_progress_bar_config(disable=True)
        self._text2image = pipeline
        self._inpaint = AutoPipelineForInpainting.from_pipe(pipeline)
        self._image2image = AutoPipelineForImage2Image.from_pipe(pipeline)
        for derived in (self._inpaint, self._image2image):
            derived.set_progress_bar_config(disable=True)

    async def close(self) -> None:
        self._text2image = self._inpaint = self._image2image = None

    def _steps(self, look: Look) -> int:
        if look.quality == "hd":
            return self.options.hd_steps or 2 * self.options.steps
        return self.options.steps

    def _variation_steps(self, strength: float, look: Look) -> int:
        """img2img runs int(steps x strength) of its steps: a turbo model's 1-4 steps could leave none, which
        diffusers refuses, so there are enough for at least one (as diffusers' turbo guides advise)."""
        steps = max(self._steps(look), math.ceil(1 / strength))
        return steps if int(steps * strength) >= 1 else steps + 1  # 1/strength may round down

    def _guidance(self, look: Look) -> float:
        if look.style == "natural":
            natural = self.options.natural_guidance
            return natural if natural is not None else self.options.guidance * 2 / 3
        return self.options.guidance

    def _generator(self) -> Any:
        import torch

        seed = int.from_bytes(os.urandom(8), "little") & (2**63 - 1)
        return torch.Generator(device="cpu").manual_seed(seed)

    def generate(self, job: GenerationJob) -> list[np.ndarray]:
        result = self._text2image(
            prompt=job.prompt,
            num_images_per_prompt=job.n,
            width=job.width,
            height=job.height,
            num_inference_steps=self._steps(job.look),
            guidance_scale=self._guidance(job.look),
            generator=self._generator(),
            output_type="np",
            **_previewing(self._text2image, job.previews),
        )
        return _pixels(result.images)

    def edit(self, job: EditJob) -> list[np.ndarray]:
        from PIL import Image

        height, width = job.image.shape[:2]
        result = self._inpaint(
            prompt=job.prompt,
            image=Image.fromarray(job.image),
            mask_image=Image.fromarray(job.repaint.astype(np.uint8) * 255),  # white: redraw
            num_images_per_prompt=job.n,
            width=width,
            height=height,
            strength=1.0,
            num_inference_steps=self._steps(job.look),
            guidance_scale=self.options.guidance,
            generator=self._generator(),
            output_type="np",
            **_previewing(self._inpaint, job.previews),
        )
        return _pixels(result.images)

    def vary(self, job: VariationJob) -> list[np.ndarray]:
        from PIL import Image

        strength = self.options.variation_strength / (2 if job.fidelity == "high" else 1)
        result = self._image2image(
            prompt=job.prompt,
            image=Image.fromarray(job.image),
            num_images_per_prompt=job.n,
            strength=strength,
            num_inference_steps=self._variation_steps(strength, job.look),
            guidance_scale=self.options.guidance,
            generator=self._generator(),
            output_type="np",
            **_previewing(self._image2image, job.previews),
        )
        return _pixels(result.images)
