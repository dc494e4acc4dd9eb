"""Bootstrap confidence intervals for AUROC, resampling images.

Image AUROC: draw the test images with replacement (seeded), recompute AUROC, take the
2.5th and 97.5th percentiles. Pixel AUROC is resampled by images too (pixels of one image
are not independent), every pixel of a drawn image counted once per draw.

Every replicate is computed from per-image score histograms, so B replicates cost one
(B x images) @ (images x levels) product instead of B sorts: for images the levels are the
distinct scores (exact); for pixels, ``pixel_levels`` levels of equal size in the ranking of
all pixels, ties kept in one level (the replicates then rank pixels within a level as ties;
the point estimate stays exact). The ranking is the report's one sort (:mod:`.ranking`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from adlight.metrics.ranking import SortedScores


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
                         level: float = 0.95, pixel_levels: int = 4096,
                         ranked: SortedScores | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of pixel AUROC, resampling whole images.

    ``ranked``: the maps' :class:`SortedScores` where the caller has them (no second sort).
    """
    n = maps.shape[0]
    ranked = ranked if ranked is not None else SortedScores(maps, masks, "anomaly maps")
    if not ranked.both_classes:
        return math.nan, math.nan
    # levels at rank quantiles of all pixels, ascending, ties in one level; one bincount
    # counts each (image, level, label) cell
    cell = (pixel_levels - 1) - ranked.rank_levels(pixel_levels)
    cell += ranked.image_of(ranked.scores.size // n) * pixel_levels
    cell *= 2
    cell += ranked.positive
    both = np.bincount(cell, minlength=2 * n * pixel_levels).reshape(n, pixel_levels, 2)
    negative, positive = torch.from_numpy(both[..., 0]).double(), torch.from_numpy(both[..., 1]).double()
    counts = _replicate_counts(n, replicates, seed)
    return _interval(_auroc_from_histograms(counts @ positive, counts @ negative), level)
