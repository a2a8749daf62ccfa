"""16-bit greyscale images brought to 8 bits a channel by scaling, where Pillow's convert() would clamp them.

Pillow opens a 16-bit greyscale PNG as mode "I;16" (or "I"), and `convert("RGB")` clamps every value above 255
to white instead of scaling it: the picture an engine would see is blank. Image edits and moderation read it
through `eight_bit` first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

_SIXTEEN_BIT_GREY = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


def eight_bit(image: Image.Image) -> Image.Image:
    """The image itself where convert() reads it right; a 16-bit grey one as "L" (or "LA" where its tRNS chunk
    names a transparent grey), its values divided by 256."""
    from PIL import Image

    if image.mode not in _SIXTEEN_BIT_GREY:
        return image
    grey = np.asarray(image).astype(np.int64)
    # Mode "I" holds 32-bit values; from a PNG they are 16-bit, and anything outside that range is clipped.
    levels = (np.clip(grey, 0, 65535) >> 8).astype(np.uint8)
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return Image.fromarray(levels)
    alpha = np.where(grey == transparent, 0, 255).astype(np.uint8)
    return Image.fromarray(np.stack([levels, alpha], axis=-1))  # 2 channels: "LA"
