"""Uploaded images as the image services read them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from oasis.services.images.pictures import read_png


def _png(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def test_a_16_bit_grey_png_reads_as_the_picture_it_shows_with_its_transparent_grey() -> None:
    grey = np.arange(256, dtype=np.uint16).reshape(16, 16)
    # Pillow's convert() clamps 16-bit greys at 255: the picture an edit or variation started from was white.
    picture = read_png(_png(Image.fromarray(grey * 257), transparency=5 * 257), "image")
    assert np.array_equal(picture.rgb[:, :, 0], grey.astype(np.uint8))
    assert np.array_equal(picture.rgb[:, :, 1], picture.rgb[:, :, 2])
    assert picture.alpha is not None and picture.alpha.reshape(-1)[5] == 0 and (picture.alpha == 0).sum() == 1
    eight = read_png(_png(Image.fromarray(grey.astype(np.uint8))), "image")
    assert np.array_equal(eight.rgb, picture.rgb) and eight.alpha is None
