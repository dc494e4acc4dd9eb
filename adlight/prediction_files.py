"""The files ``adlight predict`` writes: ``scores.csv`` and 8-bit anomaly-map / defect-mask PNGs.

numpy and PIL only, so that the Lightning prediction writer (``adlight/callbacks/predictions.py``)
and the torch-free exported-model predict (``adlight/inference/command.py``) write the same files.
"""

from __future__ import annotations

import csv
import errno
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

COLUMNS = ("path", "score", "prediction", "anomaly_map", "map_max", "defect_mask", "error")


#: errors of a write that the user's disk, not adlight, caused: reported as one line naming the file
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG)


def write_failure(path: Path | str | None, error: OSError, what: str = "") -> str:
    """One line's reason for a failed write of ``path`` (a full disk says so)."""
    target = f"{what} {path}".strip() if path is not None else (what or "a file")
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"cannot write {target}: the disk is full"
    return f"cannot write {target}: {error.strerror or error}"


def write_whole(path: Path, text: str) -> None:
    """``text`` into ``path`` through a hidden partial file renamed into place: a reader (a
    compare, a resumed run) sees the whole file or none. A failure raises ``OSError`` naming
    ``path``, and leaves no partial file."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror, str(path)) from None


def unique_path(path: Path) -> Path:
    """``path`` if it is free, else ``name-1``, ``name-2``...: never overwrite a user's file."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def start_scores_csv(directory: Path, name: str = "scores.csv") -> Path:
    """Create ``directory/maps`` and ``directory/name`` with its header; returns the CSV's path."""
    (directory / "maps").mkdir(parents=True, exist_ok=True)
    path = directory / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerow(COLUMNS)
    return path


def write_prediction_rows(csv_path: Path, prediction: dict, unreadable: Iterable[dict] = (),
                          map_max: float | None = None) -> None:
    """Append one row per image of ``prediction`` (``path``, ``score``, optional ``prediction``,
    ``anomaly_map`` N x 1 x H x W, ``defect_mask``, ``pixel_threshold``) and one per unreadable file.

    Map PNGs are 255 * map / scale, clipped; the scale is ``map_max``, else twice the pixel
    threshold (the threshold is mid-grey), else the map's own maximum; the CSV records it.
    """
    maps_dir = csv_path.parent / "maps"
    pixel_t = math.nan if prediction.get("pixel_threshold") is None else prediction["pixel_threshold"]
    rows = []
    for i, path in enumerate(prediction["path"]):
        row = {"path": path, "score": float(prediction["score"][i]),
               "prediction": int(prediction["prediction"][i]) if "prediction" in prediction else ""}
        if "anomaly_map" in prediction:
            amap = np.asarray(prediction["anomaly_map"][i, 0])
            scale = map_max or (2 * pixel_t if math.isfinite(pixel_t) and pixel_t > 0
                                else float(amap.max()) or 1.0)
            stem = "_".join(Path(path).parts[-2:]).rsplit(".", 1)[0].replace(":", "_")
            map_path = unique_path(maps_dir / f"{stem}.png")
            Image.fromarray(np.clip(amap / scale * 255.0, 0, 255).astype(np.uint8)).save(map_path)
            row.update(anomaly_map=map_path.name, map_max=scale)
            if "defect_mask" in prediction:
                mask_path = unique_path(maps_dir / f"{map_path.stem}_mask.png")
                mask = np.asarray(prediction["defect_mask"][i, 0]).astype(np.uint8) * 255
                Image.fromarray(mask).save(mask_path)
                row["defect_mask"] = mask_path.name
        rows.append(row)
    # files that could not be decoded: listed with their error, not scored
    rows += [{"path": bad["path"], "error": bad["error"]} for bad in unreadable]
    # a file name that is not UTF-8 (Linux hands it over with surrogate escapes) is written
    # with its odd bytes as backslash escapes, so the CSV stays UTF-8 and the row stays readable
    with csv_path.open("a", newline="", encoding="utf-8", errors="backslashreplace") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in COLUMNS})
