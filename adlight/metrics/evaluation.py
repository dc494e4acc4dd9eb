"""The test report: every figure of one evaluation epoch, overall and per anomaly class.

Beside AUROC and the thresholded figures, the figures the field compares with: average
precision, the best F1 over all thresholds (an oracle figure, never a threshold), AUPRO for
models that localise (MVTec AD's region overlap, :mod:`adlight.metrics.pro`), and seeded
bootstrap 95% intervals for image and pixel AUROC (:mod:`adlight.metrics.bootstrap`).
Every pixel figure, the per-class rows' included, reads one sort of all pixels
(:class:`adlight.metrics.ranking.SortedScores`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from adlight.metrics.bootstrap import image_auroc_interval, pixel_auroc_interval
from adlight.metrics.core import (
    auroc,
    average_precision,
    f1_curve,
    has_both_classes,
    threshold_metrics,
)
from adlight.metrics.epoch_outputs import EpochOutputs
from adlight.metrics.ranking import SortedScores

#: the false-positive-rate limit of AUPRO (MVTec AD's evaluation)
AUPRO_FPR_LIMIT = 0.3


def evaluate(
    outputs: EpochOutputs,
    image_threshold: float | None,
    pixel_threshold: float | None,
    nu_sweep: Sequence[float] = (),
    bootstrap_replicates: int = 1000,
    bootstrap_seed: int = 0,
    ranked: SortedScores | None = None,
) -> dict[str, Any]:
    """The report of one test epoch: AUROC, AP, thresholded metrics, pixel metrics, AUPRO.

    Keys are ``image_*`` and ``pixel_*``; ``*_F1_best`` is the best F1 over all thresholds
    *on this split* (F1-max: an oracle figure the papers report, never used as a threshold;
    exact, every distinct score a threshold); ``*_AUROC_CI95`` the seeded bootstrap interval
    (``bootstrap_replicates`` 0 turns it off). ``ranked``: :func:`pixel_ranking` of ``outputs``
    where the caller has it (it is the one sort of every pixel that all pixel figures share).
    With ``nu_sweep`` (the nu of each ``score_sweep`` column) it adds Andrews et al.'s
    figure: ``image_AUROC_by_nu`` and its ``image_AUROC_nu_mean`` / ``_std``.
    """
    report: dict[str, float] = {
        "image_AUROC": auroc(outputs.score, outputs.label),
        "n_images": int(outputs.label.numel()),
        "n_anomalous": int((outputs.label == 1).sum()),
    }
    if has_both_classes(outputs.label):
        report["image_AP"] = average_precision(outputs.score, outputs.label)
        report["image_F1_best"] = float(f1_curve(outputs.score, outputs.label)[0].max())
        if bootstrap_replicates:
            report["image_AUROC_CI95"] = list(image_auroc_interval(
                outputs.score, outputs.label, bootstrap_replicates, bootstrap_seed))
    if image_threshold is not None and not math.isnan(image_threshold):
        for key, value in threshold_metrics(outputs.score, outputs.label, image_threshold).items():
            report[f"image_{key}"] = value
    ranked = ranked if ranked is not None else pixel_ranking(outputs)
    if ranked is not None:
        report["pixel_AUROC"] = ranked.auroc()
        if ranked.both_classes:
            report["pixel_F1_best"] = ranked.f1_best()
            report["pixel_AP"] = ranked.average_precision()
            report["pixel_AUPRO"] = ranked.aupro(outputs.mask, AUPRO_FPR_LIMIT)
            if bootstrap_replicates:
                report["pixel_AUROC_CI95"] = list(pixel_auroc_interval(
                    outputs.anomaly_map, outputs.mask, bootstrap_replicates, bootstrap_seed, ranked=ranked))
        if pixel_threshold is not None and not math.isnan(pixel_threshold):
            for key, value in ranked.threshold_metrics(pixel_threshold).items():
                if key in ("F1", "precision", "recall"):
                    report[f"pixel_{key}"] = value
    if nu_sweep and outputs.score_sweep is not None and has_both_classes(outputs.label):
        report.update(nu_sweep_auroc(outputs.score_sweep, outputs.label, nu_sweep))
    return report


def validation_summary(outputs: EpochOutputs, ranked: SortedScores | None) -> dict[str, Any]:
    """What the validation split says of the current weights: its size, image AUROC and, with
    maps and masks, pixel AUROC and AUPRO. Recipes are chosen on these, never on test
    (``adlight benchmark develop`` reads them from ``metrics.json``'s ``validation``)."""
    summary: dict[str, Any] = {"n_images": int(outputs.label.numel()),
                               "n_anomalous": int((outputs.label == 1).sum())}
    if has_both_classes(outputs.label):
        summary["image_AUROC"] = auroc(outputs.score, outputs.label)
    if ranked is not None and ranked.both_classes:
        summary["pixel_AUROC"] = ranked.auroc()
        try:
            summary["pixel_AUPRO"] = ranked.aupro(outputs.mask, AUPRO_FPR_LIMIT)
        except ValueError:  # no defect region
            pass
    return summary


def pixel_ranking(outputs: EpochOutputs) -> SortedScores | None:
    """Every pixel of the epoch sorted once by its map value (``None`` without maps and masks)."""
    if not outputs.has_pixels:
        return None
    return SortedScores(outputs.anomaly_map, outputs.mask, "anomaly maps")


def nu_sweep_auroc(score_sweep: Tensor, labels: Tensor, nus: Sequence[float]) -> dict[str, Any]:
    """AUROC of each column of ``score_sweep`` (N x K, one per nu), their mean and std over the finite ones."""
    values = [auroc(score_sweep[:, k], labels) for k in range(len(nus))]
    finite = [v for v in values if not math.isnan(v)]
    return {
        "image_AUROC_nu_mean": float(np.mean(finite)) if finite else math.nan,
        "image_AUROC_nu_std": float(np.std(finite)) if finite else math.nan,
        "image_AUROC_by_nu": dict(zip((f"{v:g}" for v in nus), values, strict=True)),
    }


#: key of the row of :func:`per_class_metrics` that pools every anomaly class
ALL_CLASSES = "ALL"


def _class_name(class_id: int, class_names: list[str]) -> str:
    return class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)


def _anomaly_classes(outputs: EpochOutputs, class_names: list[str]) -> list[tuple[str, Tensor]]:
    """``(name, mask of that class's anomalous images)`` for every class with anomalies.

    Names are unique and never :data:`ALL_CLASSES`, so a row can never hide another.
    """
    anomalous = outputs.label == 1
    classes, seen = [], {ALL_CLASSES}
    for class_id in sorted(set(outputs.class_id[anomalous].tolist())):
        name = _class_name(class_id, class_names)
        if name in seen:
            name = f"{name} (class {class_id})"
        seen.add(name)
        classes.append((name, anomalous & (outputs.class_id == class_id)))
    return classes


def per_class_metrics(
    outputs: EpochOutputs,
    class_names: list[str],
    image_threshold: float | None = None,
    pixel_threshold: float | None = None,
    ranked: SortedScores | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics of each anomaly class against *all* normal test images, then ``"ALL"``.

    The per-class protocol of Zhao & Karray's Tables 3-4 (and of MVTec defect types): the
    images of one anomaly class plus every normal image form one test set. Each row has
    ``n_normal``, ``n_anomalous``, ``image_AUROC``; ``pixel_AUROC`` (over every pixel of
    those images) when the model gives anomaly maps and the data has masks;
    ``image_F1``/``image_precision``/``image_recall`` at ``image_threshold`` when one is
    given; ``pixel_F1``/``pixel_precision``/``pixel_recall`` likewise at ``pixel_threshold``.
    Recall is the share of that class caught; precision and F1 also count the false alarms
    on all normals, so they depend on how many images the class has. The ``"ALL"`` row pools
    every anomaly and equals the overall figures of :func:`evaluate`. Pixel rows select
    their images' pixels from ``ranked`` (:func:`pixel_ranking`, made here if not given).
    """
    normal = outputs.label == 0
    rows = [*_anomaly_classes(outputs, class_names), (ALL_CLASSES, outputs.label == 1)]
    image_t = image_threshold if image_threshold is not None and math.isfinite(image_threshold) else None
    pixel_t = pixel_threshold if pixel_threshold is not None and math.isfinite(pixel_threshold) else None
    ranked = ranked if ranked is not None else pixel_ranking(outputs)
    if ranked is not None:
        image_of_pixel = ranked.image_of(outputs.anomaly_map[0].numel())
    result: dict[str, dict[str, float]] = {}
    for name, anomalies in rows:
        chosen = normal | anomalies
        scores, labels = outputs.score[chosen], outputs.label[chosen]
        row: dict[str, float] = {
            "n_normal": int(normal.sum()),
            "n_anomalous": int(anomalies.sum()),
            "image_AUROC": auroc(scores, labels),
        }
        if image_t is not None:
            for key, value in threshold_metrics(scores, labels, image_t).items():
                if key in ("F1", "precision", "recall"):
                    row[f"image_{key}"] = value
        if ranked is not None:
            pixels = ranked.subset(chosen.cpu().numpy()[image_of_pixel])
            row["pixel_AUROC"] = pixels.auroc()
            if pixel_t is not None:
                for key, value in pixels.threshold_metrics(pixel_t).items():
                    if key in ("F1", "precision", "recall"):
                        row[f"pixel_{key}"] = value
        result[name] = row
    return result
