"""Writes ``adlight predict`` results: a CSV of per-image scores and anomaly-map PNGs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from adlight.callbacks.report import run_directory, unique_path


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions/scores.csv`` and, for localising models, ``predictions/maps/``.

    Map PNGs are 8-bit grayscale: pixel value = 255 * map / ``map_max``, clipped. With no
    ``map_max`` it is twice the model's pixel threshold (so the threshold is mid-grey), or
    each map's own maximum when the model has no pixel threshold; the CSV records the
    scale of every map so the raw values can be recovered. ``*_mask.png`` is the defect
    mask at the pixel threshold.
    """

    COLUMNS = ("path", "score", "prediction", "anomaly_map", "map_max", "defect_mask", "error")

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
        (directory / "maps").mkdir(parents=True, exist_ok=True)
        self._csv_path = directory / name
        with self._csv_path.open("w", newline="") as handle:
            csv.writer(handle).writerow(self.COLUMNS)

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx,
                           dataloader_idx=0) -> None:
        maps_dir = self._csv_path.parent / "maps"
        # the threshold predict_step used (its "pixel_threshold"): the map's mid-grey
        pixel_t = math.nan if prediction.get("pixel_threshold") is None else prediction["pixel_threshold"]
        rows = []
        for i, path in enumerate(prediction["path"]):
            row = {"path": path, "score": float(prediction["score"][i]),
                   "prediction": int(prediction["prediction"][i]) if "prediction" in prediction else ""}
            if "anomaly_map" in prediction:
                amap = prediction["anomaly_map"][i, 0].numpy()
                scale = self.map_max or (2 * pixel_t if math.isfinite(pixel_t) and pixel_t > 0
                                         else float(amap.max()) or 1.0)
                stem = "_".join(Path(path).parts[-2:]).rsplit(".", 1)[0].replace(":", "_")
                map_path = unique_path(maps_dir / f"{stem}.png")
                Image.fromarray(np.clip(amap / scale * 255.0, 0, 255).astype(np.uint8)).save(map_path)
                row.update(anomaly_map=map_path.name, map_max=scale)
                if "defect_mask" in prediction:
                    mask_path = unique_path(maps_dir / f"{map_path.stem}_mask.png")
                    mask = prediction["defect_mask"][i, 0].numpy().astype(np.uint8) * 255
                    Image.fromarray(mask).save(mask_path)
                    row["defect_mask"] = mask_path.name
            rows.append(row)
        # files the predict loader could not decode: listed with their error, not scored
        rows += [{"path": bad["path"], "error": bad["error"]} for bad in batch.get("unreadable", ())]
        with self._csv_path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.COLUMNS)
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in self.COLUMNS})
