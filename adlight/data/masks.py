"""Reading defect masks as people store them, and checking a split's masks at setup.

The rule (``docs/contracts.md``): a pixel is defective when its value is non-zero. 0/255,
0/1, 0/any value, 16-bit, palette and coloured-on-black masks all follow from it: a palette
pixel is judged by its colour (not its index), an RGB pixel is defective when any channel is
non-zero. With alpha, a transparent pixel is normal (nothing was painted there); a mask that is
black everywhere and only varies in alpha is a mask drawn in the alpha channel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image

from adlight.data.image_tensors import check_mask_size, image_size_of, open_image

# modes whose array is the value itself: one number per pixel, any bit depth
_SINGLE_VALUE_MODES = {"1", "L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}


def _channels(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """``(values H x W x C, alpha H x W or None)`` of a mask in any PIL mode."""
    if img.mode in _SINGLE_VALUE_MODES:
        return np.asarray(img)[..., None], None
    if img.mode == "LA":
        arr = np.asarray(img)
        return arr[..., :1], arr[..., 1]
    has_alpha = img.mode in ("RGBA", "RGBa", "PA") or (
        img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        arr = np.asarray(img.convert("RGBA"))
        return arr[..., :3], arr[..., 3]
    return np.asarray(img.convert("RGB")), None


def _pixel_values(img: Image.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(values H x W x C, every pixel's value(s) as rows N x C', alpha or None)``."""
    values, alpha = _channels(img)
    rows = values.reshape(-1, values.shape[-1])
    if alpha is not None:
        rows = np.concatenate([rows, alpha.reshape(-1, 1).astype(rows.dtype)], axis=1)
    return values, rows, alpha


def _more_than_two(rows: np.ndarray) -> bool:
    """Whether the rows hold more than two distinct values (two comparisons, no sort: a
    sort of every pixel's values took 200 ms per 900 px mask)."""
    other = (rows != rows[0]).any(axis=1)
    if not other.any():
        return False
    second = rows[int(other.argmax())]
    return bool((other & (rows != second).any(axis=1)).any())


def mask_pixels(img: Image.Image) -> tuple[np.ndarray, bool]:
    """``(defective H x W bool, whether it holds more than two distinct values)``."""
    values, rows, alpha = _pixel_values(img)
    many = _more_than_two(rows)
    coloured = (values != 0).any(axis=-1)
    if alpha is None:
        return coloured, many
    if not coloured.any() and alpha.min() != alpha.max():
        return alpha > 0, many  # black paint on a transparent layer
    return coloured & (alpha > 0), many


def count_values(img: Image.Image) -> int:
    """Number of distinct pixel values (colours with their alpha) of a decoded mask."""
    return len(np.unique(_pixel_values(img)[1], axis=0))


def load_mask(
    path: str | os.PathLike,
    image_size: tuple[int, int] | None = None,
    image_path: str | os.PathLike | None = None,
) -> torch.Tensor:
    """Read a mask as float32 ``1 x H x W`` with 1 where the stored value is non-zero.

    When ``image_size`` (``(W, H)`` as PIL gives it) is passed, a mask of another size raises
    :class:`adlight.errors.DataError` naming both files.
    """
    path = Path(path)
    img = open_image(path, "mask")
    if image_size is not None:
        check_mask_size(path, image_path if image_path is not None else "?", img.size, image_size)
    defective, _ = mask_pixels(img)
    return torch.from_numpy(defective.astype(np.float32))[None]


def _first(found: list[str], what: str) -> str:
    more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
    return f"{found[0]}{more} {what}"


def check_masks(samples: Sequence) -> None:
    """Check every mask of a split at setup, before an epoch reads it.

    A mask of another size than its image is a :class:`DataError` naming both. Warns, naming
    the first file and how many more: masks with more than two distinct values (every
    non-zero one counts as defective), anomalous images whose mask is empty, and normal images
    whose mask is not.
    """
    many_values: list[str] = []
    empty: list[str] = []
    not_empty: list[str] = []
    for s in samples:
        if s.mask_path is None:
            continue
        img = open_image(Path(s.mask_path), "mask")
        check_mask_size(s.mask_path, s.path, img.size, image_size_of(s.path))
        defective, many = mask_pixels(img)
        if many:
            many_values.append(f"{s.mask_path} ({count_values(img)} values)" if not many_values
                               else str(s.mask_path))
        if s.label == 1 and not defective.any():
            empty.append(f"{s.mask_path} of {s.path}")
        elif s.label == 0 and defective.any():
            not_empty.append(f"{s.mask_path} of {s.path}")
    if many_values:
        rank_zero_warn(
            f"mask {_first(many_values, 'holds more than two distinct values')}; every non-zero "
            "pixel counts as defective (anti-aliased or JPEG-compressed masks grow their defects)"
        )
    if empty:
        rank_zero_warn(
            f"mask {_first(empty, 'is empty (no non-zero pixel)')}, but the image is anomalous: "
            "its pixels all count as normal"
        )
    if not_empty:
        rank_zero_warn(
            f"mask {_first(not_empty, 'has defective (non-zero) pixels')}, but the image is "
            "normal: those pixels count as defects"
        )
