"""Image files with numpy and PIL only: which files are images, and how one is decoded.

The one decoding rule of adlight (EXIF orientation applied, palette through RGBA, 16-bit
rescaled, not clipped; an animated GIF or WebP gives its first frame), shared
by the data layer (:mod:`adlight.data.image_tensors`, which makes tensors of it) and the torch-free
runtime of exported models (:mod:`adlight.inference`), so both see the same pixels. Files that
cannot be read raise :class:`adlight.errors.DataError` naming the file, never a bare PIL error.
"""

from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from adlight.errors import DataError

#: File extensions (lower case) treated as images when listing folders.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
#: EXIF orientation tag, and its values that swap width and height (a 90 or 270 degree turn)
_ORIENTATION, _TURNED = 0x0112, (5, 6, 7, 8)

# PIL modes that hold more than 8 bits per channel; PIL's convert("L") clips them instead of
# rescaling, so they are rescaled by hand.
_WIDE_MODES = {"I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(
    folder: str | os.PathLike, recursive: bool = True, argument: str = "image folder",
    required: bool = False, broken_links: bool = False,
) -> list[Path]:
    """Image files under ``folder``, sorted by path; hidden files and folders are skipped.

    ``broken_links``: also list symlinks with an image extension whose target is missing or
    a loop (a predict folder lists them in ``scores.csv`` with their error; nothing vanishes).
    Raises :class:`DataError` naming ``argument`` when ``folder`` is not a directory, or
    (``required=True``) when it holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{argument} {folder} does not exist or is not a directory")
    pattern = "**/*" if recursive else "*"
    found = []
    for p in folder.glob(pattern):
        rel = p.relative_to(folder).parts
        if any(part.startswith(".") for part in rel):
            continue
        if is_image_file(p) and (p.is_file() or (broken_links and p.is_symlink() and not p.exists())):
            found.append(p)
    if required and not found:
        raise DataError(
            f"{argument} {folder} contains no image files (looked for "
            f"{', '.join(IMAGE_EXTENSIONS)}, case-insensitive{', in all sub-folders' if recursive else ''})"
        )
    return sorted(found)


def other_files(folder: str | os.PathLike) -> list[Path]:
    """Files under ``folder`` (not hidden) that :func:`list_images` does not list: not images."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if not any(part.startswith(".") for part in
                  p.relative_to(folder).parts) and p.is_file() and not is_image_file(p))


def warn_not_images(folder: str | os.PathLike, argument: str) -> None:
    """Warn, naming them, about the files of a predict folder that are not scored as images."""
    others = other_files(folder)
    if others:
        shown = ", ".join(p.name for p in others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        warnings.warn(f"{argument} {folder}: {len(others)} file(s) without an image extension "
                      f"({', '.join(IMAGE_EXTENSIONS)}) are not scored: {shown}", UserWarning, stacklevel=2)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_ORIENTATION, 1) or 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: the pixels as stored
        return 1


def open_image(path: Path, what: str) -> Image.Image:
    """Open and decode ``path`` now, turned as its EXIF orientation says (a phone's JPEG);
    :class:`DataError` naming ``what`` and the file if it fails."""
    if path.is_symlink() and not path.exists():
        try:
            os.stat(path)
        except OSError as error:
            reason = "a symlink loop" if error.errno == errno.ELOOP else \
                f"a symlink to {os.readlink(path)}, which does not exist"
            raise DataError(f"cannot decode {what} {path}: it is {reason}") from None
    try:
        img = Image.open(path)
        img.load()  # decode now so truncated files fail here, with the path
        if _orientation(img) != 1:
            img = ImageOps.exif_transpose(img)
    except FileNotFoundError:
        raise DataError(f"cannot decode {what} {path}: file does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode {what} {path}: {type(e).__name__}: {e}") from e
    return img


def to_float_array(img: Image.Image, channels: int) -> np.ndarray:
    """PIL image -> float32 H x W x C array in [0, 1] with ``channels`` channels."""
    if img.mode in _WIDE_MODES or img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode in _WIDE_MODES:
            arr = arr / _WIDE_MODES[img.mode]
        elif img.mode == "I":
            # 32-bit integer images are usually 16-bit data stored wide
            arr = arr / (65535.0 if arr.max(initial=0) > 255 else 255.0)
        arr = np.clip(arr, 0.0, 1.0).astype(np.float32)[..., None]
        if channels == 3:
            arr = np.repeat(arr, 3, axis=2)
        return arr
    mode = "RGB" if channels == 3 else "L"
    if img.mode != mode:
        # palette / alpha images go through RGBA so transparency does not pick odd colours
        if img.mode == "P":
            img = img.convert("RGBA")
        img = img.convert(mode)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr


def image_size_of(path: str | os.PathLike, what: str = "image") -> tuple[int, int]:
    """``(width, height)`` of an image file, read from its header only."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            return (height, width) if _orientation(img) in _TURNED else (width, height)
    except FileNotFoundError:
        raise DataError(f"cannot decode {what} {path}: file does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode {what} {path}: {type(e).__name__}: {e}") from e
