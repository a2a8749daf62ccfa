"""Image files in and out: the checks OpenAI makes on an uploaded image or mask (a PNG under 4 MB for DALL-E 2,
square; a PNG, JPEG or WebP under 50 MB for the GPT image models; a mask the image's size), each a 400 naming the
part, and the encoding of what an engine drew (PNG, JPEG or WebP)."""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass

import numpy as np

from oasis.engines.eight_bit import eight_bit
from oasis.errors import OasisError, invalid_request

MAX_UPLOAD_BYTES = 4 * 1024 * 1024  # DALL-E 2's images, and every mask
MAX_GPT_IMAGE_UPLOAD_BYTES = 50 * 1024 * 1024  # the GPT image models' images
MAX_SIDE = 4096  # larger images are scaled down to this on their long side
MAX_PIXELS = 64_000_000  # a 48-megapixel photo fits; a small file can claim (and decode to) gigabytes of pixels
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_ONLY = ("png",)
GPT_IMAGE_FORMATS = ("png", "jpeg", "webp")
_FORMAT_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WebP"}


@dataclass(frozen=True)
class Picture:
    rgb: np.ndarray  # HxWx3 uint8
    alpha: np.ndarray | None  # HxW uint8, None when the file has no transparency channel


_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,(?P<data>.*)", re.DOTALL)


def data_url_bytes(url: object, param: str, named: str, max_bytes: int) -> bytes:
    """An image sent as a data URL (`named` in the messages: what it is), decoded: a 400 for any other URL (this
    server does not fetch images), for one over `max_bytes`, or for data that is not base64."""
    found = _DATA_URL.fullmatch(url.strip()) if isinstance(url, str) else None
    if found is None:
        raise invalid_request(
            f"{named} must be a data URL (data:image/...;base64,...): this server does not fetch images.", param=param
        )
    if len(found["data"]) > max_bytes * 4 // 3 + 4:
        raise invalid_request(f"{named} is larger than {max_bytes // (1024 * 1024)} MB.", param=param)
    try:
        return base64.b64decode(found["data"], validate=True)
    except (binascii.Error, ValueError):
        raise invalid_request(f"{named} is not valid base64.", param=param) from None


def read_png(data: bytes, param: str) -> Picture:
    return read_picture(data, param, PNG_ONLY, MAX_UPLOAD_BYTES)


def read_picture(data: bytes, param: str, formats: tuple[str, ...], max_bytes: int) -> Picture:
    """The file's pixels, or a 400 naming `param`: a file over `max_bytes`, in none of `formats`, unreadable, or
    of more than MAX_PIXELS. One over MAX_SIDE a side (a phone's photo) is scaled down to fit, keeping its shape."""
    from PIL import Image

    written = _checked_format(data, param, formats, max_bytes)
    try:
        with Image.open(io.BytesIO(data), formats=[written.upper()]) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise _too_many_pixels(param, width, height)
            # tRNS transparency on an L or RGB image counts too: convert("RGBA") applies it
            has_alpha = "A" in image.mode or "transparency" in image.info
            if image.format == "JPEG" and max(width, height) > MAX_SIDE:
                image.draft("RGB", (MAX_SIDE, MAX_SIDE))  # decoded at a fraction of its size already
            converted = eight_bit(image).convert("RGBA")
        if max(converted.size) > MAX_SIDE:
            converted.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    except OasisError:
        raise
    except Exception:  # Pillow raises OSError, SyntaxError, EOFError, struct.error, … for a broken file
        raise invalid_request(
            f"'{param}' could not be read as a {_FORMAT_NAMES[written]} image.", param=param
        ) from None
    pixels = np.asarray(converted, dtype=np.uint8)
    return Picture(rgb=np.ascontiguousarray(pixels[:, :, :3]), alpha=pixels[:, :, 3].copy() if has_alpha else None)


def check_picture(data: bytes, param: str, formats: tuple[str, ...], max_bytes: int) -> None:
    """read_picture's checks without decoding the pixels (an image only an upstream server reads)."""
    from PIL import Image

    written = _checked_format(data, param, formats, max_bytes)
    try:
        with Image.open(io.BytesIO(data), formats=[written.upper()]) as image:
            width, height = image.size
    except Exception:
        raise invalid_request(
            f"'{param}' could not be read as a {_FORMAT_NAMES[written]} image.", param=param
        ) from None
    if width * height > MAX_PIXELS:
        raise _too_many_pixels(param, width, height)


def picture_format(data: bytes) -> str:
    """The format of a file read_picture or check_picture accepted: `png`, `jpeg` or `webp`."""
    return _format_of(data) or "png"


def _checked_format(data: bytes, param: str, formats: tuple[str, ...], max_bytes: int) -> str:
    if len(data) >= max_bytes:
        limit = f"{max_bytes // (1024 * 1024)} MB"
        raise invalid_request(f"'{param}' is {len(data):,} bytes; it must be less than {limit}.", param=param)
    written = _format_of(data)
    if written not in formats:
        names = " or ".join(_FORMAT_NAMES[name] for name in formats)
        raise invalid_request(f"'{param}' must be a {names} file.", param=param)
    return written


def _too_many_pixels(param: str, width: int, height: int) -> OasisError:
    return invalid_request(
        f"'{param}' is {width}x{height}; at most {MAX_PIXELS // 1_000_000} million pixels are read.", param=param
    )


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
