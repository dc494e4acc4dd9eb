"""What a results page embeds: per-image rows, thresholds, curves, the report, as plain JSON.

ROC and precision-recall curves are computed here with torchmetrics (through
:mod:`adlight.metrics`, on the same rescaled scores as the report's AUROC), so the plotted
curve is the one the table's AUROC integrates. The threshold slider's figures are computed
in the page from the embedded scores, because they must follow the slider; their rule is
the report's (``score >= threshold`` is anomalous, 0 where a ratio is 0 / 0), checked
against ``metrics.json`` in ``tests/test_report_page.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_precision_recall_curve

from adlight.metrics import (
    binary_labels,
    has_both_classes,
    pro_curve,
    rescale_unit,
    roc_curve,
    thin_curve,
)

#: what the page calls an image without an anomaly class
NORMAL = "normal"
#: most points kept per curve: more than a page can draw, small in the embedded JSON
CURVE_POINTS = 400


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: those become ``None`` (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def class_label(label: int, class_id: int, class_names: Sequence[str]) -> str:
    """The class an image is filed under in the page: ``normal`` or its anomaly class's name."""
    if label == 0:
        return NORMAL
    return class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)


def image_rows(
    scores: Tensor, labels: Tensor, class_ids: Tensor, paths: Sequence[str], class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per test image, in the test split's order: ``index, path, score, label, class``."""
    return [
        {"index": i, "path": str(paths[i]), "score": float(scores[i]), "label": int(labels[i]),
         "class": class_label(int(labels[i]), int(class_ids[i]), class_names)}
        for i in range(len(paths))
    ]


def confusion_at(scores: Sequence[float], labels: Sequence[int], threshold: float) -> dict[str, float]:
    """The report's thresholded figures, in plain Python: the page's JS does exactly this.

    ``score >= threshold`` is anomalous; precision, recall and F1 are torchmetrics' (float32
    division, 0 for 0 / 0), so they equal ``metrics.json``'s ``image_*`` bit for bit. Scores
    are float32 and torch compares them with the threshold rounded to float32, so we do too.
    """
    threshold = float(torch.tensor(threshold, dtype=torch.float32))
    tp = sum(1 for s, y in zip(scores, labels, strict=True) if s >= threshold and y == 1)
    fp = sum(1 for s, y in zip(scores, labels, strict=True) if s >= threshold and y == 0)
    fn = sum(1 for s, y in zip(scores, labels, strict=True) if s < threshold and y == 1)
    tn = len(labels) - tp - fp - fn

    def ratio(num: int, den: int) -> float:
        return float(torch.tensor(float(num)) / torch.tensor(float(den))) if den else 0.0

    return {"TP": tp, "FP": fp, "FN": fn, "TN": tn, "precision": ratio(tp, tp + fp),
            "recall": ratio(tp, tp + fn), "F1": ratio(2 * tp, 2 * tp + fn + fp)}


def _thin(xs: Tensor, ys: Tensor) -> list[list[float]]:
    """At most :data:`CURVE_POINTS` points, first and last kept (a step curve stays a step curve)."""
    return thin_curve(xs, ys, CURVE_POINTS)


def curves(scores: Tensor, labels: Tensor) -> dict[str, list[list[float]]]:
    """ROC (``[fpr, tpr]``) and precision-recall (``[recall, precision]``) points; empty
    without both classes (no curve to draw)."""
    labels = binary_labels(labels)
    if not has_both_classes(labels):
        return {"roc": [], "pr": []}
    fpr, tpr = roc_curve(scores, labels)
    precision, recall, _ = binary_precision_recall_curve(
        rescale_unit(scores.flatten()), labels, validate_args=False)
    return {"roc": _thin(fpr, tpr), "pr": _thin(recall.flip(0), precision.flip(0))}


def pro_points(anomaly_maps: Tensor | None, masks: Tensor | None) -> list[list[float]]:
    """The per-region-overlap curve (``[fpr, pro]``, :func:`adlight.metrics.pro_curve`), whose
    area up to FPR 0.3 is the report's AUPRO; empty without maps or defect regions."""
    if anomaly_maps is None or masks is None:
        return []
    try:
        return _thin(*pro_curve(anomaly_maps, masks))
    except ValueError:  # no anomalous region or no normal pixel: no curve
        return []


def page_data(
    report: dict[str, Any],
    rows: list[dict[str, Any]],
    files: list[dict[str, str]] | None = None,
    title: str = "adlight test report",
    pro: list[list[float]] | None = None,
    confusion: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything the run page shows, JSON-ready (also written as ``results.json``).

    ``rows`` from :func:`image_rows`; ``files[i]`` names row i's thumbnails (``image``,
    ``overlay``, ``predicted``, relative to the page) where they were written; ``confusion``
    the rows of confusion.csv (counts at the image threshold, per class and ALL).
    """
    scores = torch.tensor([r["score"] for r in rows], dtype=torch.float64)
    labels = torch.tensor([r["label"] for r in rows], dtype=torch.long)
    images = [dict(row, **(files[i] if files else {})) for i, row in enumerate(rows)]
    classes = [NORMAL] + sorted({r["class"] for r in rows} - {NORMAL})
    return finite_or_none({
        "kind": "run",
        "title": title,
        "report": report,
        "thresholds": {
            level: {"value": report.get(f"{level}_threshold"),
                    "source": report.get(f"{level}_threshold_source", "none")}
            # an image-level run (no masks at all: report["image_level"]) has no pixel threshold
            for level in ("image", "pixel") if level == "image" or "image_level" not in report
        },
        "classes": classes,
        "curves": {**(curves(scores, labels) if rows else {"roc": [], "pr": []}), "pro": pro or []},
        "images": images,
        "confusion": list(confusion or []),
    })
