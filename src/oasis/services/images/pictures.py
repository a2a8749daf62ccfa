"""PNG files in and out: the checks OpenAI makes on an uploaded image or mask (a PNG under 4 MB, square, a mask the
image's size), each a 400 naming the part, and the encoding of what an engine drew (PNG, JPEG or WebP)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from oasis.engines.eight_bit import eight_bit
from oasis.errors import invalid_request

MAX_UPLOAD_BYTES = 4 * 1024 * 1024
MAX_SIDE = 4096  # a small PNG can still decode to gigabytes of pixels
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Picture:
    rgb: np.ndarray  # HxWx3 uint8
    alpha: np.ndarray | None  # HxW uint8, None when the file has no transparency channel


def read_png(data: bytes, param: str) -> Picture:
    from PIL import Image

    if len(data) >= MAX_UPLOAD_BYTES:
        raise invalid_request(f"'{param}' is {len(data):,} bytes; it must be less than 4 MB.", param=param)
    if not data.startswith(_PNG_MAGIC):
        raise invalid_request(f"'{param}' must be a PNG file.", param=param)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            too_big = width > MAX_SIDE or height > MAX_SIDE
            # tRNS transparency on an L or RGB image counts too: convert("RGBA") applies it
            has_alpha = "A" in image.mode or "transparency" in image.info
            converted = None if too_big else eight_bit(image).convert("RGBA")
    except Exception:  # Pillow raises OSError, SyntaxError, EOFError, struct.error, … for a broken file
        raise invalid_request(f"'{param}' could not be read as a PNG image.", param=param) from None
    if converted is None:
        raise invalid_request(f"'{param}' is {width}x{height}; at most {MAX_SIDE} pixels a side.", param=param)
    pixels = np.asarray(converted, dtype=np.uint8)
    return Picture(rgb=np.ascontiguousarray(pixels[:, :, :3]), alpha=pixels[:, :, 3].copy() if has_alpha else None)


def require_square(picture: Picture, param: str) -> None:
    height, width = picture.rgb.shape[:2]
    if width != height:
        raise invalid_request(f"'{param}' is {width}x{height}; it must be square.", param=param)


def resized(pixels: np.ndarray, width: int, height: int, *, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(pixels).resize((width, height), resample), dtype=np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Output:
    """How drawn images are written: the file format, and JPEG's or WebP's quality (OpenAI's `output_compression`,
    0-100; PNG is lossless and ignores it)."""

    format: str = "png"
    compression: int = 100


def encoded_image(pixels: np.ndarray, output: Output) -> bytes:
    if output.format == "png":
        return png_bytes(pixels)
    from PIL import Image

    buffer = io.BytesIO()
    picture = Image.fromarray(pixels.astype(np.uint8), "RGB")
    picture.save(buffer, format=output.format.upper(), quality=output.compression)
    return buffer.getvalue()
