"""Image bytes from a request -> uint8 C x H x W pixels at the model's size.

The pixels are those the :class:`~adlight.inference.Inferencer` (and ``adlight predict``) would
score for the same file: decoded by :mod:`adlight.image_files` (16-bit rescaled, palette through
RGBA) and resized by :func:`adlight.inference.images.to_uint8`. What a camera does not send is
refused with a :class:`BadImage` naming the problem, before any pixel is decoded where possible.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from adlight.image_files import to_float_array
from adlight.inference.images import to_uint8

#: formats a request may carry (PIL format names)
FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
#: PIL modes of one grey or colour plane (with or without alpha, 8 or 16 bits): what the data
#: layer converts to the model's channels; anything else (CMYK, LAB, YCbCr, HSV, several
#: bands) is refused rather than converted by a guess
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
COLOUR_MODES = ("RGB", "RGBA", "P", "PA")


class BadImage(Exception):
    """A request's image the server cannot score; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def decode_image(data: bytes, name: str, channels: int, height: int, width: int,
                 max_pixels: int) -> np.ndarray:
    """``data`` (a PNG / JPEG / BMP / TIFF file) -> uint8 ``channels`` x ``height`` x ``width``."""
    if not data:
        raise BadImage(400, f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise BadImage(413, f"{name} has more pixels than PIL decodes safely; the limit is {max_pixels} "
                            "(--max_pixels)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise BadImage(400, f"{name} is not an image (not a PNG, JPEG, BMP or TIFF file)") from None
    if image.format not in FORMATS:
        raise BadImage(415, f"{name} is a {image.format} image; send PNG, JPEG, BMP or TIFF")
    pixels = image.width * image.height
    if pixels > max_pixels:  # from the header, before decoding
        raise BadImage(413, f"{name} is {image.width} x {image.height} = {pixels} pixels; the limit is "
                            f"{max_pixels} (--max_pixels)")
    if image.mode not in GREY_MODES + COLOUR_MODES:
        raise BadImage(422, f"{name} has {len(image.getbands())} channels ({image.mode}); the model takes "
                            f"{channels} ({'grey' if channels == 1 else 'RGB'}): send a grey or RGB image")
    try:
        image.load()  # a truncated file fails here
        floats = to_float_array(image, channels)
    except (OSError, ValueError, SyntaxError) as error:
        raise BadImage(400, f"{name} cannot be decoded ({type(error).__name__}: {error}); "
                            "the file may be truncated") from None
    return to_uint8(floats, height, width)
