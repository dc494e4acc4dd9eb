"""Writes what a test run measured: ``metrics.json``, figures, a printed table, logger panels."""

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

from adlight.callbacks.figures import examples_figure, histogram_figure, pixel_f1_figure, roc_figure


def unique_path(path: Path) -> Path:
    """``path`` if it is free, else ``name-1``, ``name-2``...: never overwrite a user's file."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


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


class TestReport(Callback):
    """After ``test``: metrics.json, example/ROC/histogram/pixel-F1 PNGs, a printed table.

    Args:
        figures: write and log the figures (turn off for very large sweeps).
    """

    def __init__(self, figures: bool = True) -> None:
        self.figures = figures
        self.written: list[Path] = []

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        # every rank asks: under DDP trainer.log_dir is a broadcast, and a rank that skips it
        # leaves rank 0 waiting on a peer that has moved on (measured: gloo "connection closed")
        directory = run_directory(trainer)
        if not trainer.is_global_zero or not getattr(pl_module, "test_report", None):
            return
        report = dict(pl_module.test_report)
        report["model"] = type(pl_module).__name__
        report["checkpoint"] = trainer.ckpt_path
        metrics_path = unique_path(directory / "metrics.json")
        metrics_path.write_text(json.dumps(_json_ready(report), indent=2) + "\n")
        self.written = [metrics_path]
        if self.figures and pl_module.test_outputs is not None:
            self.written += self._figures(trainer, pl_module, directory, report)
        self._print(report)

    def _figures(self, trainer, pl_module, directory: Path, report: dict) -> list[Path]:
        outputs = pl_module.test_outputs
        figures = {
            "examples": examples_figure(pl_module.test_examples, report.get("pixel_threshold")),
            "roc": roc_figure(outputs),
            "score_histogram": histogram_figure(outputs, report.get("image_threshold")),
            "pixel_f1_vs_tau": pixel_f1_figure(outputs, report.get("pixel_threshold")),
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

    def _print(self, report: dict) -> None:
        table = Table(title="adlight test report")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in report.items():
            if isinstance(value, dict) or key in ("model", "checkpoint"):
                continue
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            table.add_row(key, shown)
        for name, value in report.get("per_class_image_AUROC", {}).items():
            table.add_row(f"image_AUROC[{name}]", "nan" if value != value else f"{value:.4f}")
        console = Console()
        console.print(table)
        console.print("wrote " + ", ".join(str(p) for p in self.written))
