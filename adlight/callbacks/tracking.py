"""What a test hands to the experiment trackers beyond metrics: MLflow artifacts, a W&B table.

:class:`RunArtifacts` (added with ``--mlflow.enabled``): the report's numbers as MLflow metrics
(``report/...``) and the files the :class:`~adlight.callbacks.TestReport` wrote (``metrics.json``,
figures, ``confusion.csv``, ``report.html`` and its ``report_files/``) as artifacts under ``test/``.

:class:`WandbTestTable` (added with ``--wandb.enabled``): a ``wandb.Table`` of the test images,
one row each: the image, its map overlay (with the ground truth's outline), the ground-truth
mask, score, label, outcome at the image threshold (TP / FP / TN / FN) and class; at most
``rows`` rows, spread evenly over the test split when there are more images.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

from adlight.callbacks.report import TestReport, test_dataset
from adlight.checks import is_number
from adlight.metrics.results import TestResults
from adlight.report_page.thumbnails import map_range, outline, overlay, rgb


def _numbers(report: dict, prefix: str = "report") -> dict[str, float]:
    """Every finite number of a (nested) report, as ``prefix/key/...``."""
    found = {}
    for key, value in report.items():
        name = f"{prefix}/{key}".replace(" ", "_")
        if isinstance(value, dict):
            found.update(_numbers(value, name))
        elif is_number(value) and math.isfinite(value):
            found[name] = float(value)
    return found


class RunArtifacts(L.Callback):
    """The test report's numbers and files, into every MLflow logger of the trainer."""

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]
        results: TestResults | None = getattr(pl_module, "test_results", None)
        if not trainer.is_global_zero or not loggers or results is None:
            return
        reports = [cb for cb in trainer.callbacks if isinstance(cb, TestReport)]
        written = [Path(p) for cb in reports for p in cb.written]
        folders = {p.parent / "report_files" for p in written if p.name.startswith("report")}
        for logger in loggers:
            logger.log_metrics(_numbers(results.report))
            for path in written:
                logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="test")
            for folder in folders:
                if folder.is_dir():
                    logger.experiment.log_artifacts(logger.run_id, str(folder), artifact_path="test/report_files")


def outcome(label: int, score: float, threshold: float | None) -> str:
    if threshold is None or math.isnan(threshold):
        return "no threshold"
    predicted = score >= threshold
    return {(1, True): "TP", (0, True): "FP", (0, False): "TN", (1, False): "FN"}[(int(label), bool(predicted))]


class WandbTestTable(L.Callback):
    """A ``wandb.Table`` of up to ``rows`` test images (0: none), logged as ``test/images``."""

    def __init__(self, rows: int = 500) -> None:
        self.rows = rows

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        results: TestResults | None = getattr(pl_module, "test_results", None)
        if not trainer.is_global_zero or not loggers or results is None or self.rows <= 0:
            return
        table = self.table(results, test_dataset(trainer))
        for logger in loggers:
            logger.experiment.log({"test/images": table})

    def table(self, results: TestResults, dataset):
        import wandb

        outputs = results.outputs
        count = len(outputs.score)
        chosen = np.unique(np.linspace(0, count - 1, min(self.rows, count)).round().astype(int)) if count else []
        maps, masks = outputs.anomaly_map, outputs.mask
        scale = map_range(maps) if maps is not None else (0.0, 1.0)
        names = results.class_names
        columns = ["image", "overlay", "ground_truth", "score", "label", "outcome", "class"]
        table = wandb.Table(columns=columns)
        for k in chosen:
            item = dataset[int(outputs.index[k])] if dataset is not None else {}
            base = rgb(item["image"]) if "image" in item else None
            mask = masks[k] if masks is not None else None
            heat = (overlay(base, maps[k].float().cpu().reshape(maps.shape[-2:]),
                            outline(mask) if mask is not None else None, scale)
                    if maps is not None else None)
            class_id = int(outputs.class_id[k])
            table.add_data(
                wandb.Image(base) if base is not None else None,
                wandb.Image(heat) if heat is not None else None,
                wandb.Image((mask.cpu().numpy() > 0.5).astype(np.uint8) * 255) if mask is not None else None,
                float(outputs.score[k]), int(outputs.label[k]),
                outcome(int(outputs.label[k]), float(outputs.score[k]), results.image_threshold),
                names[class_id] if 0 <= class_id < len(names) else str(class_id))
        return table
