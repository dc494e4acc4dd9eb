"""Post-processing of anomaly maps shared by every model that localises."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from adlight.losses import full_precision


def gaussian_kernel(kernel: int, sigma: float, device=None) -> Tensor:
    """The 1 x 1 x k x k kernel of torchvision's ``gaussian_blur`` (its formula, op for op)."""
    limit = (kernel - 1) / (2.0 * math.sqrt(2.0) * sigma)
    line = torch.softmax(torch.linspace(-limit, limit, steps=kernel, device=device).pow(2).neg(), dim=0)
    return torch.mm(line[:, None], line[None, :]).view(1, 1, kernel, kernel)


def smooth(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of N x 1 x H x W maps (sigma in pixels; 0 leaves them as they are).

    torchvision's ``gaussian_blur`` written out (reflect padding, one 2-D convolution), so the
    kernel is a constant of fixed shape that ONNX export can take (``adlight/export``).
    """
    if sigma <= 0:
        return maps
    kernel = 2 * math.ceil(3 * sigma) + 1
    kernel = min(kernel, 2 * ((min(maps.shape[-2:]) - 1) // 2) + 1)  # reflect padding limit
    with full_precision(maps):  # a blur in bf16 keeps 3 digits of the map: ties in pixel AUROC
        padded = F.pad(maps.float(), [kernel // 2] * 4, mode="reflect")
        return F.conv2d(padded, gaussian_kernel(kernel, sigma, maps.device))
