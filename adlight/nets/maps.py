"""Post-processing of anomaly maps shared by every model that localises."""

from __future__ import annotations

import math

from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur

from adlight.losses import full_precision


def smooth(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of N x 1 x H x W maps (sigma in pixels; 0 leaves them as they are)."""
    if sigma <= 0:
        return maps
    kernel = 2 * math.ceil(3 * sigma) + 1
    kernel = min(kernel, 2 * ((min(maps.shape[-2:]) - 1) // 2) + 1)  # reflect padding limit
    with full_precision(maps):  # a blur in bf16 keeps 3 digits of the map: ties in pixel AUROC
        return gaussian_blur(maps.float(), kernel_size=[kernel, kernel], sigma=[sigma, sigma])
