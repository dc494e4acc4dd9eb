"""Anomaly metrics: primitives on torchmetrics (:mod:`.core`), the test report
(:mod:`.evaluation`), AUPRO (:mod:`.pro`), bootstrap intervals (:mod:`.bootstrap`) and
the one sort that the pixel figures share (:mod:`.ranking`)."""

from adlight.metrics.core import (
    THRESHOLD_MODES,
    auroc,
    average_precision,
    binary_labels,
    binned_precision_recall_curve,
    f1_curve,
    has_both_classes,
    parse_threshold,
    rates_from_counts,
    rescale_unit,
    roc_curve,
    thin_curve,
    threshold_metrics,
    threshold_outside_scores,
)
from adlight.metrics.epoch_outputs import EpochCollector, EpochOutputs
from adlight.metrics.evaluation import (
    ALL_CLASSES,
    AUPRO_FPR_LIMIT,
    evaluate,
    nu_sweep_auroc,
    per_class_metrics,
    pixel_ranking,
    validation_summary,
)
from adlight.metrics.pro import aupro, pro_curve
from adlight.metrics.ranking import SortedScores, f1_optimal_threshold

__all__ = [
    "ALL_CLASSES",
    "AUPRO_FPR_LIMIT",
    "THRESHOLD_MODES",
    "SortedScores",
    "EpochCollector",
    "EpochOutputs",
    "aupro",
    "auroc",
    "average_precision",
    "binary_labels",
    "binned_precision_recall_curve",
    "evaluate",
    "f1_curve",
    "f1_optimal_threshold",
    "has_both_classes",
    "nu_sweep_auroc",
    "parse_threshold",
    "per_class_metrics",
    "pixel_ranking",
    "validation_summary",
    "pro_curve",
    "rates_from_counts",
    "rescale_unit",
    "roc_curve",
    "thin_curve",
    "threshold_metrics",
    "threshold_outside_scores",
]
