"""Per-image pictures beside the page: the image, its anomaly-map overlay with the ground-truth
outline, and the predicted mask (``map >= pixel threshold``) with the same outline.

JPEG for photographs and overlays (a 256 px image is ~10 kB), PNG for the two-colour mask
(smaller than JPEG and exact). Measured sizes for 1,000 images are in docs/report_page.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image
from torch import Tensor

OUTLINE_RGB = (0, 255, 0)  # green: visible on the inferno map and on the black/white mask
OVERLAY_ALPHA = 0.5


def _rgb(image: Tensor) -> np.ndarray:
    """``C x H x W`` in [0, 1] (1 or 3 channels) -> ``H x W x 3`` uint8."""
    image = image.detach().float().cpu().clamp(0, 1)
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return (image[:3].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def outline(mask: Tensor) -> np.ndarray:
    """Boundary pixels of a 0/1 ``H x W`` mask: the mask minus its 3x3 erosion (numpy shifts:
    torch's max_pool2d took 76 ms a 256 px mask here, most of a 1,000-image page's time)."""
    inside = mask.detach().cpu().numpy() > 0.5
    padded = np.pad(inside, 1, mode="edge")
    h, w = inside.shape
    eroded = inside.copy()
    for dy in range(3):
        for dx in range(3):
            eroded &= padded[dy:dy + h, dx:dx + w]
    return inside & ~eroded


def _resized(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if array.shape[:2] == size:
        return array
    return np.asarray(Image.fromarray(array).resize(size[::-1], Image.BILINEAR))


def overlay(base: np.ndarray | None, amap: Tensor, edge: np.ndarray | None,
            map_range: tuple[float, float]) -> np.ndarray:
    """The map (``H x W``) in inferno over the image (``H x W x 3`` uint8, or none), with the
    ground truth's outline in green: ``H x W x 3`` uint8."""
    low, high = map_range
    unit = ((amap - low) / max(high - low, 1e-12)).clamp(0, 1).numpy()
    heat = (colormaps["inferno"](unit)[..., :3] * 255).astype(np.uint8)
    if base is not None:
        heat = (OVERLAY_ALPHA * heat + (1 - OVERLAY_ALPHA) * _resized(base, heat.shape[:2])).astype(np.uint8)
    if edge is not None:
        heat[edge] = OUTLINE_RGB
    return heat


def write_image_files(
    folder: Path,
    stem: str,
    image: Tensor | None,
    anomaly_map: Tensor | None = None,
    mask: Tensor | None = None,
    map_range: tuple[float, float] = (0.0, 1.0),
    pixel_threshold: float | None = None,
) -> dict[str, str]:
    """Write ``stem_image.jpg``, ``stem_overlay.jpg``, ``stem_predicted.png`` (those the inputs
    allow) into ``folder``; returns ``{kind: file name}``. Maps are coloured on one
    ``map_range`` for the whole run, so a cool map means a low score everywhere."""
    written: dict[str, str] = {}
    base = _rgb(image) if image is not None else None
    if base is not None:
        Image.fromarray(base).save(folder / f"{stem}_image.jpg", quality=85)
        written["image"] = f"{stem}_image.jpg"
    if anomaly_map is None:
        return written
    amap = anomaly_map.detach().float().cpu().reshape(anomaly_map.shape[-2:])
    edge = outline(mask.reshape(amap.shape)) if mask is not None else None
    heat = overlay(base, amap, edge, map_range)
    Image.fromarray(heat).save(folder / f"{stem}_overlay.jpg", quality=85)
    written["overlay"] = f"{stem}_overlay.jpg"
    if pixel_threshold is not None:
        # three colours, so a palette PNG: PIL's optimize=True took 330 ms an image for 15% less
        predicted = (amap >= pixel_threshold).numpy().astype(np.uint8)
        if edge is not None:
            predicted[edge] = 2
        picture = Image.frombytes("P", predicted.shape[::-1], predicted.tobytes())
        picture.putpalette([0, 0, 0, 255, 255, 255, *OUTLINE_RGB])
        picture.save(folder / f"{stem}_predicted.png")
        written["predicted"] = f"{stem}_predicted.png"
    return written


def map_range(anomaly_maps: Tensor) -> tuple[float, float]:
    """One colour range for every map of a run: ``[min(0, lowest), highest]``."""
    return min(0.0, float(anomaly_maps.min())), float(anomaly_maps.max())


__all__ = ["map_range", "outline", "overlay", "rgb", "write_image_files"]

rgb = _rgb
