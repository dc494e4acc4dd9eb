"""Reading image and mask files into float tensors.

Every image leaves here as float32 ``C x H x W`` in ``[0, 1]`` (the batch contract in
``docs/contracts.md``; masks are read by :mod:`adlight.data.masks`). Files that
cannot be read raise :class:`adlight.errors.DataError` naming the file, never a bare PIL error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from adlight.errors import DataError
from adlight.image_files import (  # noqa: F401 (re-exported: the data layer's names)
    IMAGE_EXTENSIONS,
    image_size_of,
    is_image_file,
    list_images,
    open_image,
    to_float_array,
    warn_not_images,
)


def load_image(path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """Read ``path`` as float32 ``channels x H x W`` in ``[0, 1]``.

    A grayscale file in an RGB set is repeated to 3 channels; a colour file in a grayscale set
    is converted to luminance. 16-bit files are rescaled, not clipped.
    """
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels!r}")
    path = Path(path)
    img = open_image(path, "image")
    arr = to_float_array(img, channels)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def check_mask_size(
    mask_path: str | os.PathLike,
    image_path: str | os.PathLike,
    mask_size: tuple[int, int],
    image_size: tuple[int, int],
) -> None:
    """Raise :class:`DataError` naming both files when a mask and its image differ in size."""
    if tuple(mask_size) != tuple(image_size):
        raise DataError(
            f"mask {mask_path} is {mask_size[0]}x{mask_size[1]} (WxH) but its image "
            f"{image_path} is {image_size[0]}x{image_size[1]}; a mask must have its image's size"
        )
