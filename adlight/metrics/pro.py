"""AUPRO: the area under the per-region-overlap curve, as MVTec AD's evaluation defines it.

Bergmann et al. (IJCV 2021): every connected component of a ground-truth mask (8-connected,
scipy's ``label`` with a 3 x 3 structure, as their evaluation code) is a region; at a
threshold t, a region's overlap is the share of its pixels with map >= t, PRO(t) the mean
overlap over all regions of the split, and FPR(t) the share of normal pixels (mask 0, in
every image) with map >= t. AUPRO integrates PRO over FPR from 0 to ``fpr_limit`` (0.3) and
divides by ``fpr_limit``, so a perfect map scores 1. torchmetrics has no such metric.

The curve is exact, not binned: every pixel adds 1 / n_normal to FPR or
1 / (size of its region x n_regions) to PRO, so sorting all pixels once and summing gives
the curve at every distinct score (one point per score, ties together).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

#: 8-connectivity, as MVTec AD's evaluation code labels its ground-truth regions
_EIGHT_CONNECTED = np.ones((3, 3), dtype=int)


def region_labels(masks: Tensor) -> tuple[np.ndarray, int]:
    """Global region id per pixel (0 for normal pixels) over ``N x H x W`` masks, and the count."""
    masks = masks.detach().cpu().numpy() != 0
    labels = np.zeros(masks.shape, dtype=np.int32)  # half of int64's 130 MB at 512 px
    count = 0
    for i, mask in enumerate(masks):
        image_labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        labels[i] = np.where(image_labels > 0, image_labels + count, 0)
        count += n
    return labels, count


def pro_curve(maps: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """(FPR, PRO) at every distinct map value, from the highest threshold down, starting at (0, 0)."""
    labels, n_regions = region_labels(masks)
    labels = torch.from_numpy(labels.reshape(-1)).long()
    scores = maps.detach().cpu().double().reshape(-1)
    normal = labels == 0
    n_normal = int(normal.sum())
    if n_regions == 0 or n_normal == 0:
        raise ValueError("a PRO curve needs anomalous regions and normal pixels")
    region_size = torch.bincount(labels, minlength=n_regions + 1).double()
    pro_step = torch.where(normal, 0.0, 1.0 / (region_size[labels] * n_regions))
    fpr_step = normal.double() / n_normal
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_scores = scores[order]
    fpr, pro = fpr_step[order].cumsum(0), pro_step[order].cumsum(0)
    # one point per distinct score: the last pixel of each run of ties
    last_of_tie = torch.ones_like(sorted_scores, dtype=torch.bool)
    last_of_tie[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    zero = torch.zeros(1, dtype=torch.float64)
    return torch.cat([zero, fpr[last_of_tie]]), torch.cat([zero, pro[last_of_tie]])


def area_up_to(x: Tensor, y: Tensor, x_max: float) -> float:
    """Trapezoid area under a curve with non-decreasing ``x``, cut at ``x_max`` by interpolation."""
    inside = x <= x_max
    xs, ys = x[inside], y[inside]
    if bool((~inside).any()) and xs[-1] < x_max:
        # the first point past the limit: interpolate y at x_max on that segment
        after = int(torch.nonzero(~inside)[0])
        x0, y0, x1, y1 = x[after - 1], y[after - 1], x[after], y[after]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs = torch.cat([xs, xs.new_tensor([x_max])])
        ys = torch.cat([ys, y_at.reshape(1)])
    return float(torch.trapezoid(ys, xs))


def aupro(maps: Tensor, masks: Tensor, fpr_limit: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit``; NaN without regions or normals."""
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    try:
        fpr, pro = pro_curve(maps, masks)
    except ValueError:
        return math.nan
    return area_up_to(fpr, pro, fpr_limit) / fpr_limit
