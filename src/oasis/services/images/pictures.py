"""Image files in and out: the checks OpenAI makes on an uploaded image or mask (a PNG under 4 MB for DALL-E 2,
square; a PNG, JPEG or WebP under 50 MB for the GPT image models; a mask the image's size), each a 400 naming the
part, and the encoding of what an engine drew (PNG, JPEG or WebP)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from oasis.engines.eight_bit import eight_bit
from oasis.errors import invalid_request

MAX_UPLOAD_BYTES = 4 * 1024 * 1024  # DALL-E 2's images, and every mask
MAX_GPT_IMAGE_UPLOAD_BYTES = 50 * 1024 * 1024  # the GPT image models' images
MAX_SIDE = 4096  # a small PNG can still decode to gigabytes of pixels
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_ONLY = ("png",)
GPT_IMAGE_FORMATS = ("png", "jpeg", "webp")
_FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP"}


@dataclass(frozen=True)
class Picture:
    rgb: np.ndarray  # HxWx3 uint8
    alpha: np.ndarray | None  # HxW uint8, None when the file has no transparency channel


def read_png(data: bytes, param: str) -> Picture:
    return read_picture(data, param, PNG_ONLY, MAX_UPLOAD_BYTES)


def read_picture(data: bytes, param: str, formats: tuple[str, ...], max_bytes: int) -> Picture:
    """The file's pixels, or a 400 naming `param`: a file over `max_bytes`, in none of `formats`, or unreadable."""
    from PIL import Image

    if len(data) >= max_bytes:
        limit = f"{max_bytes // (1024 * 1024)} MB"
        raise invalid_request(f"'{param}' is {len(data):,} bytes; it must be less than {limit}.", param=param)
    written = _format_of(data)
    names = " or ".join(_FORMAT_NAMES[name] for name in formats)
    if written not in formats:
        raise invalid_request(f"'{param}' must be a {names} file.", param=param)
    try:
        with Image.open(io.BytesIO(data), formats=[written.upper()]) as image:
            width, height = image.size
            too_big = width > MAX_SIDE or height > MAX_SIDE
            # tRNS transparency on an L or RGB image counts too: convert("RGBA") applies it
            has_alpha = "A" in image.mode or "transparency" in image.info
            converted = None if too_big else eight_bit(image).convert("RGBA")
    except Exception:  # Pillow raises OSError, SyntaxError, EOFError, struct.error, … for a broken file
        raise invalid_request(
            f"'{param}' could not be read as a {_FORMAT_NAMES[written]} image.", param=param
        ) from None
    if converted is None:
        raise invalid_request(f"'{param}' is {width}x{height}; at most {MAX_SIDE} pixels a side.", param=param)
    pixels = np.asarray(converted, dtype=np.uint8)
    return Picture(rgb=np.ascontiguousarray(pixels[:, :, :3]), alpha=pixels[:, :, 3].copy() if has_alpha else None)


def _format_of(data: bytes) -> str | None:
    """The format the file's first bytes announce."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


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
