"""8-bit image batches for an exported model, with numpy and PIL only (no torch).

The pixels are those ``adlight predict`` hands its model: a file decoded by the same code
(:mod:`adlight.image_files`: palette through RGBA, 16-bit rescaled), resized in
float with antialiased bilinear (PIL's, the algorithm torchvision's ``antialias=True`` follows)
and rounded to 8 bits like ``adlight.data.datasets``. An image already at the model's size
passes through unchanged, so scores match exactly; a resized one may differ by one grey level.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from adlight import image_files
from adlight.errors import DataError
from adlight.image_files import open_image, to_float_array


def read_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """The file as float32 H x W x C in [0, 1]; :class:`DataError` naming the file if unreadable."""
    return to_float_array(open_image(Path(path), "image"), channels)


def to_uint8(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """float H x W x C in [0, 1] -> uint8 C x height x width (resized when it is another size)."""
    if image.shape[:2] != (height, width):
        planes = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), mode="F")
                             .resize((width, height), Image.BILINEAR)) for c in range(image.shape[2])]
        image = np.clip(np.stack(planes, axis=2), 0.0, 1.0)
    return np.round(image * 255.0).astype(np.uint8).transpose(2, 0, 1)


# integer dtypes whose values are taken as 8-bit grey levels when every one is in [0, 255]
_INTEGER_KINDS = "iu"


def _array_as_uint8_range(array: np.ndarray) -> np.ndarray:
    """An N x C x H x W array -> float32 in [0, 1] by the documented rules, or :class:`DataError`.

    uint8: / 255. uint16: / 65535 (the rule for 16-bit files). Other integers (int64 from a
    list, int32, int16, ...): their values must be 8-bit grey levels in [0, 255], taken as such.
    float: must be finite and in [0, 1] (a float image in 0-255 is refused, not guessed at:
    divide by 255 or pass uint8). Anything else (bool, complex, object) is refused.
    """
    kind, dtype = array.dtype.kind, array.dtype
    if dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if dtype == np.uint16:
        return (array.astype(np.float64) / 65535.0).astype(np.float32)
    if kind in _INTEGER_KINDS:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise DataError(f"images of dtype {dtype} must hold 8-bit values in [0, 255], got range "
                            f"[{low}, {high}]: pass uint8 (or uint16 for 16-bit images)")
        return array.astype(np.float32) / 255.0
    if kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            bad = int((~finite).sum())
            raise DataError(f"images of dtype {dtype} hold {bad} NaN or Inf value(s): cannot be scored")
        low, high = float(array.min()), float(array.max())
        if low < 0.0 or high > 1.0:
            hint = (": float images must be in [0, 1]; divide by 255 or pass uint8"
                    if high <= 255.0 and low >= 0.0 else ": float images must be in [0, 1]")
            raise DataError(f"images of dtype {dtype} have range [{low:g}, {high:g}]{hint}")
        return array.astype(np.float32)
    raise DataError(f"images of dtype {dtype} cannot be scored: pass uint8 (or uint16, or float in [0, 1])")


def image_batch(images, channels: int, height: int, width: int) -> np.ndarray:
    """Paths or arrays (NCHW, NHWC, CHW or HWC; dtypes as :func:`_array_as_uint8_range` says)
    -> uint8 N x C x H x W."""
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, np.ndarray):
        array = images[None] if images.ndim == 3 else images
        if array.ndim != 4:
            raise DataError(f"images must be N x C x H x W or N x H x W x C, got shape {images.shape}")
        if array.shape[1] != channels and array.shape[-1] == channels:
            array = array.transpose(0, 3, 1, 2)
        if array.shape[1] != channels:
            raise DataError(f"images have shape {images.shape}; the model takes {channels} channels")
        if array.size == 0:
            raise DataError(f"images is empty (shape {images.shape}): nothing to score")
        if array.dtype == np.uint8 and array.shape[-2:] == (height, width):
            return np.ascontiguousarray(array)
        floats = _array_as_uint8_range(array)
        return np.stack([to_uint8(img.transpose(1, 2, 0), height, width) for img in floats])
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)) and not images:
        raise DataError("images is an empty list: nothing to score")
    if isinstance(images, Sequence) and images and all(isinstance(p, (str, os.PathLike)) for p in images):
        return np.stack([to_uint8(read_image(Path(p), channels), height, width) for p in images])
    raise DataError("images must be a numpy array, an image path or a list of image paths, "
                    f"got {type(images).__name__}")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` and its sub-folders, sorted; hidden ones skipped."""
    found = image_files.list_images(folder, argument="--data.predict_dir", required=True, broken_links=True)
    image_files.warn_not_images(folder, "--data.predict_dir")
    return found
