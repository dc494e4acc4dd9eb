"""The misclassified test images of a run (Minhas & Zelek's Fig. 3) and its confusion table.

Which images are wrong is decided from the gathered per-image outputs (every rank's, without
DistributedSampler's repeats) on rank 0; only the chosen ones, at most ``cap`` per side, are
then read back from the test dataset by index (as report.html reads its thumbnails), so no
image is kept during the test loop and no image crosses processes under DDP.
"""

from __future__ import annotations

import csv
import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adlight.metrics import ALL_CLASSES
from adlight.metrics.epoch_outputs import EpochOutputs
from adlight.report_page.data import class_label

#: columns of confusion.csv, in order (``adlight benchmark`` reads them by name)
CONFUSION_COLUMNS = ("class", "TP", "FP", "TN", "FN", "precision", "recall", "F1")


@dataclass
class Mistake:
    """One misclassified test image: ``index`` in the test split, its true ``label`` and
    ``class_name``, ``score``, and ``margin``: ``|score - threshold|`` over the test scores'
    range (max - min), 0 when all scores are equal."""

    index: int
    label: int
    class_name: str
    score: float
    margin: float
    image: Tensor | None = None  # C x H x W in [0, 1], read back for the figure


@dataclass
class Misclassified:
    """The most confident mistakes of a run at ``threshold``, most confident first, and how
    many there were in all (``n_false_positives`` may exceed ``len(false_positives)``)."""

    threshold: float
    false_positives: list[Mistake] = field(default_factory=list)
    false_negatives: list[Mistake] = field(default_factory=list)
    n_false_positives: int = 0
    n_false_negatives: int = 0

    @property
    def any(self) -> bool:
        return bool(self.n_false_positives or self.n_false_negatives)


def _most_confident(candidates: list[Mistake], cap: int) -> list[Mistake]:
    # a bounded heap: O(N log cap), never a sort of every mistake; ties in split order
    return heapq.nsmallest(cap, candidates, key=lambda m: (-m.margin, m.index))


def find_misclassified(
    outputs: EpochOutputs,
    threshold: float,
    cap: int,
    class_names: Sequence[str] = (),
    image_at: Callable[[int], Tensor] | None = None,
) -> Misclassified:
    """False positives (normal, ``score >= threshold``) and false negatives (anomalous, below),
    at most ``cap`` of each, most confident first; ``image_at(index)`` (the test dataset's
    image at that split index) is called for the chosen ones only."""
    # the report's rule: torch compares float32 scores with the threshold rounded to float32
    threshold32 = float(torch.tensor(threshold, dtype=torch.float32))
    scores = outputs.score.float()
    flagged = scores >= threshold32
    spread = float(scores.max() - scores.min()) if scores.numel() else 0.0
    wrong = {"FP": (outputs.label == 0) & flagged, "FN": (outputs.label == 1) & ~flagged}
    found = Misclassified(threshold=threshold, n_false_positives=int(wrong["FP"].sum()),
                          n_false_negatives=int(wrong["FN"].sum()))
    for side, chosen in wrong.items():
        candidates = [
            Mistake(index=int(outputs.index[k]), label=int(outputs.label[k]),
                    class_name=class_label(int(outputs.label[k]), int(outputs.class_id[k]), class_names),
                    score=float(scores[k]),
                    margin=abs(float(scores[k]) - threshold) / spread if spread > 0 else 0.0)
            for k in torch.nonzero(chosen).flatten().tolist()
        ]
        kept = _most_confident(candidates, cap)
        if image_at is not None:
            for mistake in kept:
                mistake.image = image_at(mistake.index)
        if side == "FP":
            found.false_positives = kept
        else:
            found.false_negatives = kept
    return found


def confusion_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """TP/FP/TN/FN with precision, recall and F1 at the image threshold: one row per anomaly
    class, then ``ALL`` (the report's ``image_*``); empty without an image threshold.

    A class's row is its ``per_class`` row (that class's anomalies against all normal test
    images): its TP and FN are its own, FP and TN are the false alarms all classes share.
    """
    if "image_TP" not in report:
        return []
    shared = {"FP": report["image_FP"], "TN": report["image_TN"]}
    rows = []
    for name, row in (report.get("per_class") or {}).items():
        if name == ALL_CLASSES or "image_recall" not in row:
            continue
        n = int(row["n_anomalous"])
        # recall is torchmetrics' float32 TP / n, so the product rounds back to TP exactly
        tp = round(row["image_recall"] * n)
        rows.append({"class": name, "TP": tp, **shared, "FN": n - tp, "precision": row["image_precision"],
                     "recall": row["image_recall"], "F1": row["image_F1"]})
    rows.append({"class": ALL_CLASSES, "TP": report["image_TP"], **shared, "FN": report["image_FN"],
                 "precision": report["image_precision"], "recall": report["image_recall"],
                 "F1": report["image_F1"]})
    return [{key: row[key] for key in CONFUSION_COLUMNS} for row in rows]


def write_confusion_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """``confusion.csv`` with :data:`CONFUSION_COLUMNS`; NaN ratios are written empty."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=CONFUSION_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if isinstance(v, float) and not math.isfinite(v) else v
                             for k, v in row.items()})
    return path
