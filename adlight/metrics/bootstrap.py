"""Bootstrap confidence intervals for AUROC, resampling images.

Image AUROC: draw the test images with replacement (seeded), recompute AUROC, take the
2.5th and 97.5th percentiles. Pixel AUROC is resampled by images too (pixels of one image
are not independent), every pixel of a drawn image counted once per draw.

Every replicate is computed from per-image score histograms, so B replicates cost one
(B x images) @ (images x levels) product instead of B sorts: for images the levels are the
distinct scores (exact); for pixels, ``pixel_levels`` quantiles of all pixel scores (the
replicates then rank pixels within a level as ties; the point estimate stays exact).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _auroc_from_histograms(positive: Tensor, negative: Tensor) -> Tensor:
    """AUROC per row of (B x levels) counts, levels in ascending score order; ties count half."""
    below = negative.cumsum(1) - negative  # negatives strictly below each level
    pairs = positive.sum(1) * negative.sum(1)
    wins = (positive * (below + 0.5 * negative)).sum(1)
    return torch.where(pairs > 0, wins / pairs.clamp_min(1e-300), torch.full_like(pairs, math.nan))


def _replicate_counts(n: int, replicates: int, seed: int) -> Tensor:
    """(replicates x n) how often each item is drawn in each resample."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(n, (replicates, n), generator=generator)
    return torch.zeros(replicates, n, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(replicates, n, dtype=torch.float64))


def _interval(values: Tensor, level: float) -> tuple[float, float]:
    values = values[~values.isnan()]
    if values.numel() == 0:
        return math.nan, math.nan
    tail = (1.0 - level) / 2
    low, high = torch.quantile(values, torch.tensor([tail, 1.0 - tail], dtype=values.dtype))
    return float(low), float(high)


def image_auroc_interval(scores: Tensor, labels: Tensor, replicates: int = 1000, seed: int = 0,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of image AUROC (NaN, NaN when a class is missing)."""
    scores, labels = scores.detach().cpu().double().flatten(), labels.detach().cpu().flatten().long()
    if not ((labels == 0).any() and (labels == 1).any()):
        return math.nan, math.nan
    _, level_of = torch.unique(scores, return_inverse=True)
    one_hot = torch.zeros(scores.numel(), int(level_of.max()) + 1, dtype=torch.float64)
    one_hot[torch.arange(scores.numel()), level_of] = 1.0
    counts = _replicate_counts(scores.numel(), replicates, seed)
    positive = counts @ (one_hot * (labels == 1).double()[:, None])
    negative = counts @ (one_hot * (labels == 0).double()[:, None])
    return _interval(_auroc_from_histograms(positive, negative), level)


def pixel_auroc_interval(maps: Tensor, masks: Tensor, replicates: int = 1000, seed: int = 0,
                         level: float = 0.95, pixel_levels: int = 4096) -> tuple[float, float]:
    """Percentile bootstrap interval of pixel AUROC, resampling whole images."""
    n = maps.shape[0]
    scores = maps.detach().cpu().float().reshape(n, -1)
    anomalous = masks.detach().cpu().reshape(n, -1) != 0
    if not (anomalous.any() and (~anomalous).any()):
        return math.nan, math.nan
    # level boundaries at quantiles of (a sample of) all pixel scores
    flat = scores.flatten()
    sample = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[:1_000_000]]
    edges = torch.quantile(sample.double(), torch.linspace(0, 1, pixel_levels + 1, dtype=torch.float64)[1:-1])
    level_of = torch.bucketize(scores.double(), edges)  # n x pixels, in [0, pixel_levels)
    offsets = torch.arange(n)[:, None] * pixel_levels
    positive = torch.bincount((level_of + offsets)[anomalous], minlength=n * pixel_levels)
    negative = torch.bincount((level_of + offsets)[~anomalous], minlength=n * pixel_levels)
    counts = _replicate_counts(n, replicates, seed)
    positive = counts @ positive.reshape(n, pixel_levels).double()
    negative = counts @ negative.reshape(n, pixel_levels).double()
    return _interval(_auroc_from_histograms(positive, negative), level)
