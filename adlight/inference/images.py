"""8-bit image batches for an exported model, with numpy and PIL only (no torch).

The pixels are those ``adlight predict`` hands its model: a file decoded as
``adlight.data.images.load_image`` does (palette through RGBA, 16-bit rescaled), resized in
float with antialiased bilinear (PIL's, the algorithm torchvision's ``antialias=True`` follows)
and rounded to 8 bits like ``adlight.data.datasets``. An image already at the model's size
passes through unchanged, so scores match exactly; a resized one may differ by one grey level.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from adlight.errors import DataError

_WIDE_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


def read_image(path: str | os.PathLike, channels: int) -> np.ndarray:
    """The file as float32 H x W x C in [0, 1]; :class:`DataError` naming the file if unreadable."""
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DataError(f"cannot decode image {path}: file does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image {path}: {type(e).__name__}: {e}") from e
    if img.mode in _WIDE_MODES or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        arr = arr / (_WIDE_MODES.get(img.mode) or (65535.0 if arr.max(initial=0) > 255 else 255.0)) \
            if img.mode != "F" else arr
        arr = np.repeat(np.clip(arr, 0, 1).astype(np.float32)[..., None], channels, axis=2)
        return arr
    mode = "RGB" if channels == 3 else "L"
    if img.mode != mode:
        img = (img.convert("RGBA") if img.mode == "P" else img).convert(mode)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


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


#: file extensions read as images (those of ``adlight.data.images``, without importing torch)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` and its sub-folders, sorted; hidden ones skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--data.predict_dir {folder} does not exist or is not a directory")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not found:
        raise DataError(f"--data.predict_dir {folder} contains no image files")
    return found
