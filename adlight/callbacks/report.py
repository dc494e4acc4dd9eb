"""Writes what a test run measured: ``metrics.json``, ``confusion.csv``, figures (the
misclassified images among them), a printed table, logger panels, and the results page
(report.html).

It reads the model's :class:`~adlight.metrics.results.TestResults` (``pl_module.test_results``) only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import matplotlib.pyplot as plt
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from rich.console import Console
from rich.table import Table

from adlight.callbacks.figures import (
    examples_figure,
    histogram_figure,
    misclassified_figure,
    pixel_f1_figure,
    roc_figure,
)
from adlight.callbacks.misclassified import (
    CONFUSION_COLUMNS,
    Misclassified,
    confusion_rows,
    find_misclassified,
    write_confusion_csv,
)
from adlight.checks import is_int
from adlight.errors import ConfigError, OutputError
from adlight.metrics import ALL_CLASSES
from adlight.metrics.results import TestResults
from adlight.prediction_files import unique_path, write_failure, write_whole
from adlight.report_page import build_run_page


def run_directory(trainer: L.Trainer) -> Path:
    """The run's log directory, created. Call it on every rank (``trainer.log_dir`` broadcasts)."""
    directory = Path(trainer.log_dir or trainer.default_root_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def log_figure(trainer: L.Trainer, name: str, path: Path, fig) -> None:
    """Send a figure to every active logger that takes images (W&B, TensorBoard)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(name, fig, global_step=trainer.global_step)
        elif hasattr(logger, "log_image"):
            logger.log_image(key=name, images=[str(path)])


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return value


#: columns of the per-class table, in order, with their headers
PER_CLASS_COLUMNS = (
    ("n_anomalous", "n"),
    ("image_AUROC", "image AUROC"),
    ("pixel_AUROC", "pixel AUROC"),
    ("image_recall", "recall"),
    ("image_precision", "precision"),
    ("image_F1", "F1"),
    ("pixel_F1", "pixel F1"),
)


def per_class_table(per_class: dict[str, dict[str, Any]]) -> Table:
    """One row per anomaly class (each against all normal test images) and ALL; a column
    only where some row has the figure (no pixel columns without masks, no F1 without a
    threshold)."""
    n_normal = next((row["n_normal"] for row in per_class.values() if "n_normal" in row), None)
    normals = "all normal test images" if n_normal is None else f"all {n_normal} normal test images"
    table = Table(title=f"per class: each anomaly class against {normals}")
    table.add_column("class")
    columns = [(key, header) for key, header in PER_CLASS_COLUMNS
               if any(key in row for row in per_class.values())]
    for _, header in columns:
        table.add_column(header, justify="right")
    for name, row in per_class.items():
        cells = []
        for key, _ in columns:
            value = row.get(key)
            if value is None:
                cells.append("")
            elif isinstance(value, float):
                cells.append("nan" if not math.isfinite(value) else f"{value:.4f}")
            else:
                cells.append(str(value))
        if name == ALL_CLASSES:
            table.add_section()
        table.add_row(name, *cells)
    return table


#: the metrics.json key that says why an image-level run has no pixel metrics
IMAGE_LEVEL_KEY = "image_level"


def image_level_note(trainer: L.Trainer, report: dict) -> str | None:
    """The datamodule's ``pixel_metrics_note`` (an MVTec-layout category without
    ``ground_truth/``) when the report has no pixel metrics; ``None`` otherwise."""
    note = getattr(getattr(trainer, "datamodule", None), "pixel_metrics_note", None)
    has_pixels = any(key.startswith("pixel_") and not key.startswith("pixel_threshold") for key in report)
    return note if isinstance(note, str) and note and not has_pixels else None


def test_dataset(trainer: L.Trainer):
    """The dataset the test ran on (the datamodule's, else the first test loader's), or ``None``."""
    dataset = getattr(getattr(trainer, "datamodule", None), "test_dataset", None)
    if dataset is None and trainer.test_dataloaders is not None:
        loaders = trainer.test_dataloaders
        dataset = (loaders[0] if isinstance(loaders, (list, tuple)) else loaders).dataset
    return dataset


def confusion_table(rows: list[dict[str, Any]], threshold: float) -> Table:
    """confusion.csv as a printed table."""
    table = Table(title=f"confusion at the image threshold {threshold:.6g}")
    for column in CONFUSION_COLUMNS:
        table.add_column(column, justify="left" if column == "class" else "right")
    for row in rows:
        if row["class"] == ALL_CLASSES and len(rows) > 1:
            table.add_section()
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    return table


def write_results_page(trainer: L.Trainer, results: TestResults, directory: Path, report: dict,
                       confusion: list[dict[str, Any]] | None = None) -> Path:
    """report.html for this test: images and paths read back from the test dataset by index."""
    outputs = results.outputs
    dataset = test_dataset(trainer)
    index = outputs.index.tolist()
    samples = getattr(dataset, "samples", None)  # file datasets know their paths without decoding
    paths = ([str(samples[i].path) for i in index] if samples and hasattr(samples[0], "path")
             else [str(dataset[i]["path"]) for i in index] if dataset is not None
             else [str(i) for i in index])
    return build_run_page(
        directory, _json_ready(report), outputs.score, outputs.label, outputs.class_id, paths,
        results.class_names,
        image_at=(lambda k: dataset[index[k]]["image"]) if dataset is not None else None,
        anomaly_maps=outputs.anomaly_map, masks=outputs.mask, confusion=confusion, pro=results.pro_curve)


class TestReport(Callback):
    """After ``test``: metrics.json, confusion.csv, example/ROC/histogram/pixel-F1/misclassified
    PNGs, a printed table, and the results page (report.html, results.json, report_files/).

    Args:
        figures: write and log the figures (turn off for very large sweeps).
        page: write the results page (docs/report_page.md).
        misclassified: most false positives and most false negatives in misclassified.png,
            the most confident first (0: no such figure). Needs an image threshold.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, figures: bool = True, page: bool = True, misclassified: int = 16) -> None:
        if not is_int(misclassified) or misclassified < 0:
            raise ConfigError(f"misclassified must be a whole number >= 0 (0: no figure), got {misclassified!r}")
        self.figures = figures
        self.page = page
        self.misclassified_cap = misclassified
        self.written: list[Path] = []
        #: the last test's confusion.csv rows and chosen mistakes (None: no threshold or figure)
        self.confusion: list[dict[str, Any]] = []
        self.misclassified: Misclassified | None = None
        self._notes: list[str] = []

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        try:
            self._write_report(trainer, pl_module)
        except OSError as error:  # a full disk, a folder made read-only meanwhile: one line
            where = Path(error.filename) if error.filename else run_directory(trainer)
            raise OutputError(f"test report: {write_failure(where, error)}") from None

    def _write_report(self, trainer: L.Trainer, pl_module) -> None:
        # every rank asks: under DDP trainer.log_dir is a broadcast, and a rank that skips it
        # leaves rank 0 waiting on a peer that has moved on (measured: gloo "connection closed")
        directory = run_directory(trainer)
        results: TestResults | None = getattr(pl_module, "test_results", None)
        if not trainer.is_global_zero or results is None:
            return
        report = dict(results.report)
        self._notes = []
        image_level = image_level_note(trainer, report)
        if image_level:
            # no masks at all: no pixel threshold either, and one line says why
            for key in ("pixel_threshold", "pixel_threshold_source"):
                report.pop(key, None)
            report[IMAGE_LEVEL_KEY] = image_level
            self._notes.append(image_level)
        report["model"] = results.model_name
        report["checkpoint"] = trainer.ckpt_path
        metrics_path = unique_path(directory / "metrics.json")
        write_whole(metrics_path, json.dumps(_json_ready(report), indent=2) + "\n")
        self.written = [metrics_path]
        self.confusion = confusion_rows(report)
        if self.confusion:
            self.written.append(write_confusion_csv(self.confusion, unique_path(directory / "confusion.csv")))
        if self.figures:
            self.written += self._figures(trainer, results, directory)
        if self.page:
            self.written.append(write_results_page(trainer, results, directory, report, self.confusion))
        self._print(report, results.image_threshold)

    def _figures(self, trainer, results: TestResults, directory: Path) -> list[Path]:
        outputs = results.outputs
        figures = {
            "examples": examples_figure(results.examples, results.pixel_threshold),
            "roc": roc_figure(outputs),
            "score_histogram": histogram_figure(outputs, results.image_threshold),
            "pixel_f1_vs_tau": pixel_f1_figure(outputs, results.pixel_threshold),
            "misclassified": self._misclassified_figure(trainer, results),
        }
        written = []
        for name, fig in figures.items():
            if fig is None:
                continue
            path = unique_path(directory / f"{name}.png")
            fig.savefig(path, dpi=100)
            log_figure(trainer, f"test/{name}", path, fig)
            plt.close(fig)
            written.append(path)
        return written

    def _misclassified_figure(self, trainer, results: TestResults):
        """Minhas & Zelek's Fig. 3, or ``None`` (with a note why) when there is nothing to show."""
        self.misclassified = None
        if not self.misclassified_cap or results.image_threshold is None:
            return None
        dataset = test_dataset(trainer)
        self.misclassified = find_misclassified(
            results.outputs, results.image_threshold, self.misclassified_cap, results.class_names,
            image_at=(lambda i: dataset[i]["image"]) if dataset is not None else None)
        if not self.misclassified.any:
            self._notes.append(f"no misclassified test images at the image threshold "
                               f"{results.image_threshold:.6g}: misclassified.png not written")
            return None
        return misclassified_figure(self.misclassified)

    def _print(self, report: dict, image_threshold: float | None = None) -> None:
        table = Table(title="adlight test report")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in report.items():
            if isinstance(value, dict) or key in ("model", "checkpoint", IMAGE_LEVEL_KEY):
                continue
            if isinstance(value, list):  # an interval
                shown = "[" + ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in value) + "]"
            else:
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            table.add_row(key, shown)
        console = Console()
        console.print(table)
        if report.get("per_class"):
            console.print(per_class_table(report["per_class"]))
        if self.confusion and image_threshold is not None:
            console.print(confusion_table(self.confusion, image_threshold))
        for note in self._notes:
            console.print(note, soft_wrap=True)  # one line each, however wide the terminal
        console.print("wrote " + ", ".join(str(p) for p in self.written))
