"""Every ranking figure of the test report from one sort of the scores.

Pixel AUROC, AP, the best F1, AUPRO, the per-class AUROC rows, the bootstrap levels and the
F1-optimal threshold all read the same thing: the labels in descending score order, counted
up to each distinct score. Each used to sort every pixel again (torchmetrics, ``pro.py``);
at 512 px (16M pixels of a 62-image split) they were most of a 90 s report on 2 busy cores
(7.7 s now: docs/performance.md, benchmarks/report_metrics.py). Here the scores are sorted
once (:func:`sort_descending`) and every figure is a cumulative sum.
Definitions are torchmetrics' and ``pro.py``'s (tested equal in tests/test_metrics_ranking.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from adlight.errors import ConfigError, DataError
from adlight.metrics.core import binary_labels, rates_from_counts, thin_indices
from adlight.metrics.pro import area_up_to, region_labels

_SIGN_BIT = np.uint32(0x80000000)
_MAGNITUDE_BITS = np.int32(0x7FFFFFFF)


_BLOCK = 1 << 20  # positions packed at a time


def _float32_order_keys(scores: np.ndarray) -> np.ndarray:
    """uint32 keys that order as ``scores`` do, descending (the highest score gets the lowest key).

    Floats order as sign-magnitude integers: flipping a negative's magnitude bits makes them
    order as two's complement, ``~`` reverses that order, flipping the sign bit makes it
    unsigned. -0.0 becomes 0.0 first: equal scores, equal keys. :func:`_float32_from_keys` undoes it.
    """
    keys = (scores + np.float32(0.0)).view(np.int32)  # a new array: changed in place below
    negative_magnitude = keys >> 31
    negative_magnitude &= _MAGNITUDE_BITS
    keys ^= negative_magnitude
    np.invert(keys, out=keys)
    keys = keys.view(np.uint32)
    keys ^= _SIGN_BIT
    return keys


def _float32_from_keys(keys: np.ndarray) -> np.ndarray:
    """The scores of :func:`_float32_order_keys` (``keys`` is changed in place)."""
    keys ^= _SIGN_BIT
    ascending = keys.view(np.int32)
    np.invert(ascending, out=ascending)
    magnitude = ascending >> 31
    magnitude &= _MAGNITUDE_BITS
    ascending ^= magnitude
    return ascending.view(np.float32)


def sort_descending(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, scores[order], positive[order])``, ``order`` from the highest score down.

    Equal scores stay next to each other (in no particular order). float32 scores (every
    anomaly map) are sorted as one uint64 each: the score's order key, then its position and
    label. numpy sorts that with SIMD, and the sorted scores and labels are read back from the
    keys instead of gathered through ``order``: 16M pixels in 0.9 s, against 3.3 s for numpy's
    argsort and two gathers and 4.3 s for torch.sort and one (2 busy cores, lowest of 2).
    Exact: the key orders float32 values without rounding.
    Other dtypes take numpy's argsort.
    """
    if scores.dtype != np.float32 or scores.size >= 2**31:
        order = np.argsort(-scores.astype(np.float64), kind="stable")
        return order, scores[order], positive[order]
    packed = _float32_order_keys(scores).astype(np.uint64)
    packed <<= np.uint64(32)
    # position * 2, label in bit 0; the positions in blocks (one arange would be a 130 MB temporary at 512 px)
    for start in range(0, scores.size, _BLOCK):
        stop = min(start + _BLOCK, scores.size)
        packed[start:stop] |= np.arange(2 * start, 2 * stop, 2, dtype=np.uint64)
    packed |= positive.view(np.uint8)
    packed.sort()
    low = packed.astype(np.uint32)  # keeps the low 32 bits
    packed >>= np.uint64(32)
    sorted_scores = _float32_from_keys(packed.astype(np.uint32))
    del packed  # 130 MB at 512 px: gone before the positions are unpacked
    sorted_positive = (low & 1).astype(bool)
    low >>= 1  # in place: the position
    return low.view(np.int32), sorted_scores, sorted_positive


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
        scores = scores.detach().cpu().flatten()
        if scores.dtype != torch.float32:  # ints, halves: float64 holds them exactly (numpy has no bfloat16)
            scores = scores.double()
        values = np.ascontiguousarray(scores.numpy())
        if np.isnan(values).any():
            raise DataError(f"{name} contain NaN: no ranking metric is defined on them")
        label_values = labels.detach().cpu().flatten().numpy()
        if label_values.size != values.size:
            raise DataError(f"{name} and their labels differ in size: {values.size} and {label_values.size}")
        positive = label_values == 1
        # checked in place: binary_labels' int64 copy costs 0.4 s at 16M pixels
        if np.count_nonzero(positive) + np.count_nonzero(label_values == 0) != label_values.size:
            binary_labels(labels)  # raises the DataError that names the values
        self._order, sorted_scores, sorted_positive = sort_descending(values, positive)
        self._set(sorted_scores, sorted_positive)

    def _set(self, sorted_scores: np.ndarray, positive: np.ndarray) -> None:
        self.scores, self.positive = sorted_scores, positive
        # int32 positions and counts while every sum of two fits: half the memory (at 16M
        # pixels each such array is 64 MB, not 128) and faster passes than int64
        count_dtype = np.int32 if positive.size < 2**30 else np.int64
        self.ends = _run_ends(sorted_scores).astype(count_dtype, copy=False)
        self.tps = np.cumsum(positive, dtype=count_dtype)[self.ends]
        self.fps = self.ends + 1
        self.fps -= self.tps
        self.n_positive = int(self.tps[-1]) if self.tps.size else 0
        self.n_negative = int(positive.size) - self.n_positive
        self._image_of: tuple[int, np.ndarray] | None = None
        self._pro: tuple[Tensor, np.ndarray] | None = None

    @property
    def order(self) -> np.ndarray:
        """Position in the flattened input of each sorted score (of a subset: made when asked)."""
        if callable(self._order):
            self._order = self._order()
        return self._order

    def subset(self, keep: np.ndarray) -> SortedScores:
        """The scores where ``keep`` (a bool per *sorted* position) holds, without sorting again."""
        if keep.all():
            return self
        part = object.__new__(SortedScores)
        part._order = lambda: self.order[keep]  # AUROC and thresholded figures never need it
        part._set(self.scores[keep], self.positive[keep])
        return part

    def image_of(self, pixels_per_image: int) -> np.ndarray:
        """The image of each sorted score, for scores of N images of ``pixels_per_image`` each.

        Kept: the per-class rows and the bootstrap both ask for it.
        """
        if self._image_of is None or self._image_of[0] != pixels_per_image:
            self._image_of = (pixels_per_image, self.order // pixels_per_image)
        return self._image_of[1]

    @property
    def both_classes(self) -> bool:
        return self.n_positive > 0 and self.n_negative > 0

    def _blocks(self):
        """``(start, stop)`` blocks of the curve's points: float64 temporaries of the whole
        curve in these sums peaked at 0.4 GB at 512 px (16M pixels)."""
        return ((start, min(start + _BLOCK, self.ends.size)) for start in range(0, self.ends.size, _BLOCK))

    def auroc(self) -> float:
        """Area under the ROC, one point per distinct score (ties count half), as torchmetrics."""
        if not self.both_classes:
            return math.nan
        # twice the trapezoid area: integer terms and partial sums of at most 2 * P * N, exact
        # in float64 whatever order BLAS adds them in while that is below 2**53 (130M pixels)
        twice_area = 0.0
        for start, stop in self._blocks():
            before = max(start - 1, 0)  # the point before the block: its first trapezoid
            fps = self.fps[before:stop].astype(np.float64)
            tps = self.tps[before:stop].astype(np.float64)
            if start == 0:
                fps, tps = np.append(0.0, fps), np.append(0.0, tps)
            twice_area += float(np.dot(np.diff(fps), tps[1:] + tps[:-1]))
        return twice_area / (2 * self.n_positive * self.n_negative)

    def average_precision(self) -> float:
        """torchmetrics' step-wise AP: precision at each distinct score times the recall it adds."""
        if not self.both_classes:
            return math.nan
        total = 0.0
        for start, stop in self._blocks():
            tps = self.tps[start:stop]
            gained = np.diff(tps, prepend=self.tps[start - 1] if start else 0)
            total += float(np.dot(gained, tps / (self.ends[start:stop] + 1)))
        return total / self.n_positive

    def f1_best(self) -> float:
        """The best F1 over every threshold (exact: one per distinct score)."""
        if not self.both_classes:
            return math.nan
        return float(max(np.max(2 * self.tps[start:stop] / (self.ends[start:stop] + 1 + self.n_positive))
                         for start, stop in self._blocks()))

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

    def _pro_after(self, masks: Tensor) -> np.ndarray:
        """PRO once the k highest-scored anomalous pixels are in, k = 0 .. n_positive.

        Only the anomalous pixels add to PRO, each ``1 / (its region's size x regions)``, so
        PRO at a distinct score is this at its count of positives, ``tps``. Kept for the masks
        last asked about (the report's AUPRO and the results page's curve are one curve).
        ValueError without regions or normal pixels.
        """
        if self._pro is not None and self._pro[0] is masks:
            return self._pro[1]
        regions, n_regions = region_labels(masks)
        regions = regions.reshape(-1)
        if n_regions == 0 or self.n_negative == 0:
            raise ValueError("a PRO curve needs anomalous regions and normal pixels")
        region_of = regions[self.order[self.positive]]  # in score order
        region_weight = 1.0 / (np.bincount(regions, minlength=n_regions + 1) * n_regions)
        pro_after = np.append(0.0, np.cumsum(region_weight[region_of]))
        self._pro = (masks, pro_after)
        return pro_after

    def pro_curve(self, masks: Tensor, fpr_limit: float = 1.0) -> tuple[Tensor, Tensor]:
        """(FPR, PRO) at every distinct score, highest first, from (0, 0): :func:`pro.pro_curve`
        of the maps these scores are (N x H x W, ``masks`` alike), up to the first point past
        ``fpr_limit`` (the rest is never integrated: at 512 px the whole curve is 2 x 130 MB)."""
        pro_after = self._pro_after(masks)
        fpr = self.fps / self.n_negative
        last = min(int(np.searchsorted(fpr, fpr_limit, side="right")), fpr.size - 1)
        return (torch.from_numpy(np.append(0.0, fpr[: last + 1])),
                torch.from_numpy(np.append(0.0, pro_after[self.tps[: last + 1]])))

    def pro_points(self, masks: Tensor, points: int = 400) -> list[list[float]]:
        """:func:`core.thin_curve` of the whole PRO curve, computed at those points only."""
        pro_after = self._pro_after(masks)
        # curve point i > 0 is the end of run i - 1; point 0 is the (0, 0) start
        keep = thin_indices(self.ends.size + 1, points).numpy()
        run = np.maximum(keep - 1, 0)
        fpr = np.where(keep > 0, self.fps[run] / self.n_negative, 0.0)
        pro = np.where(keep > 0, pro_after[self.tps[run]], 0.0)
        return [[round(float(x), 6), round(float(y), 6)] for x, y in zip(fpr, pro, strict=True)]

    def aupro(self, masks: Tensor, fpr_limit: float) -> float:
        """:func:`pro.aupro` of the maps these scores are (N x H x W, ``masks`` alike)."""
        if not 0.0 < fpr_limit <= 1.0:
            raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
        try:
            fpr, pro = self.pro_curve(masks, fpr_limit)
        except ValueError:
            return math.nan
        return area_up_to(fpr, pro, fpr_limit) / fpr_limit

    def rank_levels(self, levels: int) -> np.ndarray:
        """A level per sorted position, 0 for the top ``1 / levels`` of the ranks; ties share one."""
        starts = np.append(0, self.ends[:-1] + 1)
        run_level = (starts.astype(np.int64) * levels // self.scores.size).astype(np.int32)
        return np.repeat(run_level, np.diff(self.ends, prepend=-1))

def f1_optimal_threshold(scores: Tensor, labels: Tensor) -> float:
    """The raw score threshold (predict anomalous when score >= t) that maximises F1."""
    ranked = SortedScores(scores, labels)
    if not ranked.both_classes:
        raise ConfigError(
            "an F1-optimal threshold needs normal and anomalous samples in the validation "
            "split; give a fixed threshold instead (e.g. --model.image_threshold 0.5)"
        )
    return ranked.f1_optimal_threshold()
