"""The pictures the page shows: the map over the image, the mask. numpy, PIL and matplotlib's
colour map only."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps

OVERLAY_ALPHA = 0.5


def map_overlay(pixels: np.ndarray, anomaly_map: np.ndarray, scale: float) -> np.ndarray:
    """uint8 C x H x W image and H x W map -> H x W x 3 uint8: the map in inferno (0 to ``scale``)
    half over the image."""
    base = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels[:3]
    unit = np.clip(anomaly_map / max(scale, 1e-12), 0.0, 1.0)
    heat = colormaps["inferno"](unit)[..., :3] * 255.0
    return (OVERLAY_ALPHA * heat + (1 - OVERLAY_ALPHA) * base.transpose(1, 2, 0)).astype(np.uint8)


def mask_picture(mask: np.ndarray) -> np.ndarray:
    """0/1 H x W -> uint8 H x W (0 / 255)."""
    return (mask > 0).astype(np.uint8) * 255
