"""Writes ``adlight predict`` results: a CSV of per-image scores and anomaly-map PNGs."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from adlight.callbacks.report import run_directory
from adlight.prediction_files import COLUMNS, start_scores_csv, unique_path, write_prediction_rows


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions/scores.csv`` and, for localising models, ``predictions/maps/``.

    Map PNGs are 8-bit grayscale: pixel value = 255 * map / ``map_max``, clipped. With no
    ``map_max`` it is twice the model's pixel threshold (so the threshold is mid-grey), or
    each map's own maximum when the model has no pixel threshold; the CSV records the
    scale of every map so the raw values can be recovered. ``*_mask.png`` is the defect
    mask at the pixel threshold.
    """

    COLUMNS = COLUMNS

    def __init__(self, map_max: float | None = None) -> None:
        super().__init__(write_interval="batch")
        self.map_max = map_max
        self._csv_path: Path | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module) -> None:
        run_dir = run_directory(trainer)  # on every rank: trainer.log_dir is a broadcast under DDP
        directory = unique_path(run_dir / "predictions") if trainer.is_global_zero else None
        directory = Path(trainer.strategy.broadcast(str(directory) if directory else None))
        # every process writes its own CSV: no two processes append to one file
        name = "scores.csv" if trainer.world_size == 1 else f"scores-rank{trainer.global_rank}.csv"
        self._csv_path = start_scores_csv(directory, name)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        # the pixel threshold predict_step used (its "pixel_threshold") is the map's mid-grey
        write_prediction_rows(self._csv_path, prediction, batch.get("unreadable", ()), self.map_max)
