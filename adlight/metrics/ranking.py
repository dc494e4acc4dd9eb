"""Every ranking figure of the test report from one sort of the scores.

Pixel AUROC, AP, the best F1, AUPRO, the per-class AUROC rows, the bootstrap levels and the
F1-optimal threshold all read the same thing: the labels in descending score order, counted
up to each distinct score. Each used to sort every pixel again (torchmetrics, ``pro.py``);
at 512 px (16M pixels of a 62-image split) the sorts were most of a 40 s report. Here the
scores are sorted once (:func:`descending_order`) and every figure is a cumulative sum.
Definitions are torchmetrics' and ``pro.py``'s (tested equal in tests/test_metrics_ranking.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from adlight.errors import ConfigError, DataError
from adlight.metrics.core import binary_labels, rates_from_counts
from adlight.metrics.pro import area_up_to, region_labels

_LOW_32_BITS = np.uint64(0xFFFFFFFF)


def descending_order(scores: np.ndarray) -> np.ndarray:
    """Positions of ``scores`` (1-d) from the highest down; equal scores stay next to each other.

    float32 scores (every anomaly map) are sorted as one uint64 per score, the score's
    order-preserving 32-bit key above its position: numpy sorts that with SIMD in 0.4 s for
    16M pixels, against 1.7 s for torch.sort or numpy's argsort (measured on 2 cores). The
    key orders float32 values exactly, so nothing is rounded. Other dtypes use argsort.
    """
    if scores.dtype != np.float32 or scores.size >= 2**32:
        return np.argsort(-scores.astype(np.float64), kind="stable")
    bits = (scores + np.float32(0.0)).view(np.int32)  # -0.0 + 0.0 is 0.0: one key for equal scores
    # floats order as sign-magnitude integers; flipping a negative's magnitude bits makes
    # them order as two's complement, ~ reverses that order, the sign flip makes it unsigned
    ascending = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
    key = ((~ascending).view(np.uint32) ^ np.uint32(0x80000000)).astype(np.uint64)
    key <<= np.uint64(32)
    key |= np.arange(scores.size, dtype=np.uint64)
    key.sort()
    key &= _LOW_32_BITS
    return key.view(np.int64)


def _run_ends(sorted_scores: np.ndarray) -> np.ndarray:
    """Index of the last element of each run of equal scores (one ROC point per distinct score)."""
    changes = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1])
    return np.append(changes, sorted_scores.size - 1) if sorted_scores.size else changes


class SortedScores:
    """Scores sorted once (descending) with their 0/1 labels; the ranking figures are methods.

    ``order[i]`` is the position, in the flattened input, of the i-th highest score; at the
    end of each run of equal scores (``ends``), ``tps`` and ``fps`` count the positives and
    negatives at or above it. Figures are NaN (or absent) where a class is missing.
    """

    def __init__(self, scores: Tensor, labels: Tensor, name: str = "scores") -> None:
        values = np.ascontiguousarray(scores.detach().cpu().flatten().numpy())
        if np.isnan(values).any():
            raise DataError(f"{name} contain NaN: no ranking metric is defined on them")
        positive = binary_labels(labels).cpu().numpy() == 1
        if positive.size != values.size:
            raise DataError(f"{name} and their labels differ in size: {values.size} and {positive.size}")
        self.order = descending_order(values)
        self._set(values[self.order], positive[self.order])

    def _set(self, sorted_scores: np.ndarray, positive: np.ndarray) -> None:
        self.scores, self.positive = sorted_scores, positive
        self.ends = _run_ends(sorted_scores)
        self.tps = np.cumsum(positive, dtype=np.int64)[self.ends]
        self.fps = self.ends + 1 - self.tps
        self.n_positive = int(self.tps[-1]) if self.tps.size else 0
        self.n_negative = int(positive.size) - self.n_positive

    def subset(self, keep: np.ndarray) -> SortedScores:
        """The scores where ``keep`` (a bool per *sorted* position) holds, without sorting again."""
        if keep.all():
            return self
        part = object.__new__(SortedScores)
        part.order = self.order[keep]
        part._set(self.scores[keep], self.positive[keep])
        return part

    def of_images(self, chosen: Tensor, pixels_per_image: int) -> SortedScores:
        """The pixels of the ``chosen`` images (a bool per image; scores were N x pixels)."""
        chosen = chosen.detach().cpu().numpy().astype(bool)
        return self.subset(chosen[self.order // pixels_per_image])

    @property
    def both_classes(self) -> bool:
        return self.n_positive > 0 and self.n_negative > 0

    def auroc(self) -> float:
        """Area under the ROC, one point per distinct score (ties count half), as torchmetrics."""
        if not self.both_classes:
            return math.nan
        fps, tps = np.append(0, self.fps), np.append(0, self.tps)
        # twice the trapezoid area in exact integers: at most 2 * P * N, far below 2**63
        twice_area = int(np.dot(np.diff(fps), tps[1:] + tps[:-1]))
        return twice_area / (2 * self.n_positive * self.n_negative)

    def average_precision(self) -> float:
        """torchmetrics' step-wise AP: precision at each distinct score times the recall it adds."""
        if not self.both_classes:
            return math.nan
        precision = self.tps / (self.ends + 1)
        return float(np.dot(np.diff(self.tps, prepend=0), precision) / self.n_positive)

    def f1_best(self) -> float:
        """The best F1 over every threshold (exact: one per distinct score)."""
        if not self.both_classes:
            return math.nan
        return float(np.max(2 * self.tps / (self.ends + 1 + self.n_positive)))

    def f1_optimal_threshold(self) -> float:
        """The score t (anomalous when score >= t) of the best F1, as :func:`core.f1_optimal_threshold`.

        F1 in float32 as torchmetrics' exact precision-recall curve gives it, and of equal
        F1s the lowest threshold (torchmetrics' curve is ascending, argmax takes the first).
        """
        tps = torch.from_numpy(self.tps).float()
        fps = torch.from_numpy(self.ends + 1) - tps
        precision, recall = tps / (tps + fps), tps / tps[-1]
        f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
        best = f1.numel() - 1 - int(torch.argmax(f1.flip(0)))
        return float(self.scores[self.ends[best]])

    def threshold_metrics(self, threshold: float) -> dict[str, float]:
        """:func:`core.threshold_metrics` of ``score >= threshold`` (compared in the scores' dtype)."""
        at_or_above = int(np.count_nonzero(self.scores >= self.scores.dtype.type(threshold)))
        tp = int(np.count_nonzero(self.positive[:at_or_above]))
        fp = at_or_above - tp
        return rates_from_counts(tp, fp, self.n_negative - fp, self.n_positive - tp)

    def aupro(self, masks: Tensor, fpr_limit: float) -> float:
        """:func:`pro.aupro` of the maps these scores are (N x H x W, ``masks`` alike).

        Only the pixels down to the first threshold past ``fpr_limit`` add to the PRO sums:
        the curve beyond is never integrated.
        """
        if not 0.0 < fpr_limit <= 1.0:
            raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
        regions, n_regions = region_labels(masks)
        regions = regions.reshape(-1)
        if n_regions == 0 or self.n_negative == 0:
            return math.nan
        fpr = self.fps / self.n_negative
        last = min(int(np.searchsorted(fpr, fpr_limit, side="right")), fpr.size - 1)
        region_of = regions[self.order[: self.ends[last] + 1]]
        region_weight = 1.0 / (np.bincount(regions, minlength=n_regions + 1) * n_regions)
        region_weight[0] = 0.0  # normal pixels add to FPR, not to PRO
        pro = np.cumsum(region_weight[region_of])[self.ends[: last + 1]]
        curve_x = torch.from_numpy(np.append(0.0, fpr[: last + 1]))
        curve_y = torch.from_numpy(np.append(0.0, pro))
        return area_up_to(curve_x, curve_y, fpr_limit) / fpr_limit

    def rank_levels(self, levels: int) -> np.ndarray:
        """A level per sorted position, 0 for the top ``1 / levels`` of the ranks; ties share one."""
        starts = np.append(0, self.ends[:-1] + 1)
        return np.repeat(starts * levels // self.scores.size, np.diff(self.ends, prepend=-1))


def f1_optimal_threshold(scores: Tensor, labels: Tensor) -> float:
    """The raw score threshold (predict anomalous when score >= t) that maximises F1."""
    ranked = SortedScores(scores, labels)
    if not ranked.both_classes:
        raise ConfigError(
            "an F1-optimal threshold needs normal and anomalous samples in the validation "
            "split; give a fixed threshold instead (e.g. --model.image_threshold 0.5)"
        )
    return ranked.f1_optimal_threshold()
