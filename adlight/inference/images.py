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


def image_batch(images, channels: int, height: int, width: int) -> np.ndarray:
    """Paths or arrays (uint8, or float in [0, 1]; NCHW, NHWC, CHW or HWC) -> uint8 N x C x H x W."""
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
        if array.dtype == np.uint8 and array.shape[-2:] == (height, width):
            return np.ascontiguousarray(array)
        floats = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
        return np.stack([to_uint8(img.transpose(1, 2, 0), height, width) for img in floats])
    if isinstance(images, Sequence) and images and all(isinstance(p, (str, os.PathLike)) for p in images):
        return np.stack([to_uint8(read_image(Path(p), channels), height, width) for p in images])
    raise DataError("images must be a numpy array, an image path or a list of image paths, "
                    f"got {type(images).__name__}")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` and its sub-folders, sorted; hidden ones skipped."""
    return image_files.list_images(folder, argument="--data.predict_dir", required=True)
