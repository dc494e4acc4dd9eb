"""Image- and pixel-level anomaly metrics on top of torchmetrics.

Why scores are rescaled before torchmetrics sees them: torchmetrics' binary curve metrics
apply a sigmoid to any batch of predictions that leaves [0, 1], batch by batch. Anomaly
scores are unbounded (a KDE log-density, a squared error), so scores of 30..50 saturate to
ties (measured: AUROC 0.50 instead of 1.00) and batches on either side of 1.0 are mapped
differently. We therefore gather the raw scores of the whole epoch first and min-max
rescale them once; the map is monotone, so AUROC and every threshold keep their meaning,
and thresholds are reported back in raw score units.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_confusion_matrix,
    binary_precision_recall_curve,
    binary_roc,
)

from adlight.checks import is_number
from adlight.errors import ConfigError, DataError

THRESHOLD_MODES = ("val_f1",)


def rescale_unit(scores: Tensor) -> Tensor:
    """Min-max rescale to [0, 1] in float64 (monotone, so rankings are unchanged)."""
    scores = scores.detach().double()
    low, high = scores.min(), scores.max()
    if high <= low:
        return torch.zeros_like(scores)
    return (scores - low) / (high - low)


def binary_labels(labels: Tensor) -> Tensor:
    """``labels`` flattened as int64, checked to be 0 or 1.

    Checked once here so that the torchmetrics calls below can skip their own argument
    checks (``validate_args=False``): those run ``torch.unique`` on every call, 2.1 s of a
    10.5 s report over 4.1M test pixels (measured before this change).
    """
    labels = labels.flatten().long()
    if ((labels != 0) & (labels != 1)).any():
        found = sorted(set(labels.unique().tolist()) - {0, 1})[:5]
        raise DataError(f"labels and masks must be 0 (normal) or 1 (anomalous), found {found}")
    return labels


def has_both_classes(labels: Tensor) -> bool:
    return bool((labels == 0).any() and (labels == 1).any())


def auroc(scores: Tensor, labels: Tensor) -> float:
    """AUROC of raw anomaly scores; NaN when only one class is present."""
    labels = binary_labels(labels)
    if not has_both_classes(labels):
        return math.nan
    value = float(binary_auroc(rescale_unit(scores.flatten()), labels, validate_args=False))
    # torchmetrics sums the trapezoids in float32: a perfect ranking of pixels came out as
    # 1.0000001 (a case in tests/test_metrics.py); outside [0, 1] is rounding, not information
    return min(max(value, 0.0), 1.0)


def roc_curve(scores: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """False- and true-positive rates of raw scores (for plots)."""
    fpr, tpr, _ = binary_roc(rescale_unit(scores.flatten()), binary_labels(labels), validate_args=False)
    return fpr, tpr


def binned_precision_recall_curve(unit: Tensor, labels: Tensor, bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """torchmetrics' ``binary_precision_recall_curve(unit, labels, thresholds=bins)``, from a histogram.

    The same thresholds (``linspace(0, 1, bins)``), the same ``score >= t`` rule and the same
    float32 division, so the same numbers (tested equal). The measured reason for not calling
    torchmetrics here: for more than 50M score-threshold pairs it loops over the thresholds
    with three passes over every score each, 10.4 s for the 4.1M pixels of a 62-image test
    split at 256 px and 1000 thresholds; a histogram of the scores between thresholds counts
    the same in one pass, 0.13 s (``benchmarks/report_metrics.py``, docs/performance.md).
    torchmetrics' vectorised path would need bins x N memory, and under
    ``torch.use_deterministic_algorithms`` swaps bincount for a one-hot matrix (a 295 GB
    allocation for 9216 pixels). ``unit`` must lie in [0, 1] (see :func:`rescale_unit`);
    counting runs on the CPU, where bincount is deterministic.
    """
    unit, positive = unit.flatten().cpu(), labels.flatten().cpu() == 1
    thresholds = torch.linspace(0, 1, bins, device=unit.device)
    # how many thresholds each score reaches: score >= thresholds[i] exactly for i < reached
    reached = torch.searchsorted(thresholds.to(unit.dtype), unit, right=True, out_int32=True)
    # positives (negatives) that reach threshold i: those with reached > i
    tps = torch.bincount(reached[positive], minlength=bins + 1).flip(0).cumsum(0).flip(0)[1:]
    fps = torch.bincount(reached[~positive], minlength=bins + 1).flip(0).cumsum(0).flip(0)[1:]
    # float32 division as torchmetrics does it (0 / 0 is NaN there too)
    precision = tps.float() / (tps + fps).float()
    recall = tps.float() / float(positive.sum())
    precision = torch.cat([precision, torch.ones(1, dtype=precision.dtype)])
    recall = torch.cat([recall, torch.zeros(1, dtype=recall.dtype)])
    return precision, recall, thresholds


def f1_curve(scores: Tensor, labels: Tensor, bins: int | None = None) -> tuple[Tensor, Tensor]:
    """F1 at every candidate threshold, with the thresholds in raw score units.

    ``bins=None`` uses every distinct score (exact); an int uses that many evenly spaced
    thresholds, which keeps memory constant for millions of pixels.
    """
    scores = scores.flatten()
    unit = rescale_unit(scores)
    labels = binary_labels(labels)
    if bins is None:
        precision, recall, thresholds = binary_precision_recall_curve(
            unit, labels, thresholds=None, validate_args=False
        )
    else:
        precision, recall, thresholds = binned_precision_recall_curve(unit, labels, bins)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    f1 = 2 * precision * recall / (precision + recall).clamp_min(1e-12)
    low, high = (v.double().to(thresholds.device) for v in (scores.min(), scores.max()))
    return f1, low + thresholds.double() * (high - low)


def rates_from_counts(tp: int, fp: int, tn: int, fn: int) -> dict[str, float]:
    """F1, precision, recall and the counts, computed as torchmetrics' binary_* metrics do.

    The same float32 operations in the same order (counts to float32, then divide; 0 for
    0 / 0), so the figures equal torchmetrics' to the bit (tested), whoever did the counting.
    """
    tp_, fp_, fn_ = torch.tensor([tp, fp, fn])

    def ratio(num: Tensor, den: Tensor) -> float:
        num, den = num.float(), den.float()
        return float(num / den) if bool(den != 0) else 0.0

    return {
        "F1": ratio(2.0 * tp_, 2.0 * tp_ + 1.0 * fn_ + fp_),
        "precision": ratio(tp_, tp_ + fp_),
        "recall": ratio(tp_, tp_ + fn_),
        "TP": tp,
        "FP": fp,
        "TN": tn,
        "FN": fn,
    }


def threshold_metrics(scores: Tensor, labels: Tensor, threshold: float) -> dict[str, float]:
    """F1, precision, recall and confusion counts of ``score >= threshold``."""
    predictions = (scores.flatten() >= threshold).long()
    labels = binary_labels(labels)
    tn, fp, fn, tp = binary_confusion_matrix(predictions, labels, validate_args=False).flatten().tolist()
    return rates_from_counts(tp, fp, tn, fn)


def threshold_outside_scores(threshold: float, scores: Tensor, argument: str) -> str | None:
    """Why a fixed ``threshold`` decides nothing: it lies outside the ``scores`` (``None`` if inside)."""
    if scores.numel() == 0:
        return None
    low, high = float(scores.min()), float(scores.max())
    if not (math.isfinite(low) and math.isfinite(high)) or low <= threshold <= high:
        return None
    side = "normal" if threshold > high else "anomalous"
    return (f"the fixed {argument} {threshold:g} is outside the observed scores [{low:.6g}, "
            f"{high:.6g}]: every one is predicted {side}")


def parse_threshold(value: float | str | None, argument: str) -> float | str | None:
    """Validate a threshold argument: a number, ``"val_f1"`` or ``None`` (no threshold)."""
    if value is None or is_number(value):
        return None if value is None else float(value)
    if value in THRESHOLD_MODES:
        return value
    raise ConfigError(
        f"{argument} must be a number or one of {THRESHOLD_MODES}, got {value!r}"
    )


def average_precision(scores: Tensor, labels: Tensor) -> float:
    """Average precision (torchmetrics' step-wise area under the precision-recall curve); NaN
    when only one class is present."""
    labels = binary_labels(labels)
    if not has_both_classes(labels):
        return math.nan
    return float(binary_average_precision(rescale_unit(scores.flatten()), labels, validate_args=False))


def thin_indices(n: int, points: int = 400) -> Tensor:
    """At most ``points`` indices into a curve of ``n`` points, evenly spread, first and last kept."""
    return torch.unique(torch.linspace(0, n - 1, min(n, points)).round().long())


def thin_curve(xs: Tensor, ys: Tensor, points: int = 400) -> list[list[float]]:
    """The curve at :func:`thin_indices` (for plots)."""
    return [[round(float(xs[i]), 6), round(float(ys[i]), 6)] for i in thin_indices(xs.numel(), points)]
