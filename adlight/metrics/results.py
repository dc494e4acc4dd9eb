"""What a test run hands to the callbacks that report it: one object, read by every reporter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adlight.metrics.epoch_outputs import EpochOutputs


@dataclass
class TestResults:
    """The results of one test epoch (on every rank; ``examples`` are kept on rank 0 only).

    Attributes:
        model_name: the LightningModule's class name.
        report: the metrics (``metrics.json``): ``image_*``, ``pixel_*``, thresholds and their
            sources, ``per_class`` rows, ``image_AUROC_nu_*`` for a nu sweep.
        outputs: per-image scores, labels, class ids (and maps and masks), gathered, on the CPU.
        examples: a few normal and anomalous images with their score (and map, reconstruction,
            mask) for the example figure.
        image_threshold, pixel_threshold: the thresholds used (``None``: none).
        image_threshold_source, pixel_threshold_source: where each came from
            (``"validation split, F1-optimal"``, ``"fixed"``, ``"none"`` when none was asked
            for, or ``"none: <why>"`` when none could be chosen for these weights).
        class_names: the datamodule's class names (``class_id`` -> name).
        pro_curve: the PRO curve whose area is ``pixel_AUPRO``, as at most 400 ``[fpr, pro]``
            points (``None``: no maps, masks or regions).
    """

    __test__ = False  # not a pytest test class, whatever its name

    model_name: str
    report: dict[str, Any]
    outputs: EpochOutputs
    examples: list[dict[str, Any]] = field(default_factory=list)
    image_threshold: float | None = None
    pixel_threshold: float | None = None
    image_threshold_source: str = "none"
    pixel_threshold_source: str = "none"
    class_names: list[str] = field(default_factory=list)
    pro_curve: list[list[float]] | None = None
