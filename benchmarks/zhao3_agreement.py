"""Benchmark analysis: how far apart the rows of a finished ``adlight benchmark zhao3`` really are.

    python benchmarks/zhao3_agreement.py /work/longruns/zhao3_bf16 [--resamples 2000]

Reads each row's per-image test scores (``results.json`` of its newest run) and its validation
image AUROC over the epochs (the TensorBoard log), and prints three Markdown tables:

- ALL (every disease pooled against the nevi) with a bootstrap 95% interval and standard
  deviation over the test images (resampled with replacement, numpy seed 0);
- the Spearman rank correlation of the per-image scores between every two rows (1.0: the two
  rows rank the test images alike, so no loss change can separate their AUROC);
- validation image AUROC at every validation epoch.

What it cannot tell: the effect of the training seed or of another draw of the split (one run
each here).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

ROWS = ("ham10000_ae_bce", "ham10000_vae", "ham10000_cae_l2", "ham10000_cae_l1_sparse")


def newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.stat().st_mtime) if paths else None


def test_scores(row_dir: Path) -> dict[str, tuple[float, int]] | None:
    found = newest(list(row_dir.glob("*/lightning_logs/version_*/results.json")))
    if found is None:
        return None
    return {i["path"]: (float(i["score"]), int(i["label"])) for i in json.loads(found.read_text())["images"]}


def validation_curve(row_dir: Path, tag: str = "val/image_AUROC") -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in sorted(row_dir.glob("*/lightning_logs/version_*/events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags().get("scalars", []):
            points.update({e.step: e.value for e in accumulator.Scalars(tag)})
    return sorted(points.items())


def bootstrap(scores: np.ndarray, labels: np.ndarray, resamples: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(0)
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, len(scores), len(scores))
        if labels[pick].min() != labels[pick].max():
            values.append(roc_auc_score(labels[pick], scores[pick]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high), float(np.std(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="the --output folder of adlight benchmark zhao3")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    rows = {row: test_scores(args.output / row) for row in ROWS}
    rows = {row: found for row, found in rows.items() if found}
    if not rows:
        raise SystemExit(f"no finished zhao3 row (results.json) under {args.output}")

    print("| row | ALL | 95% bootstrap | bootstrap std |\n|---|---|---|---|")
    for row, found in rows.items():
        scores = np.array([s for s, _ in found.values()])
        labels = np.array([y for _, y in found.values()])
        low, high, std = bootstrap(scores, labels, args.resamples)
        print(f"| {row} | {roc_auc_score(labels, scores):.3f} | [{low:.3f}, {high:.3f}] | {std:.3f} |")

    print("\n| rows | Spearman of the per-image scores |\n|---|---|")
    for a, b in itertools.combinations(rows, 2):
        paths = sorted(set(rows[a]) & set(rows[b]))
        rho = spearmanr([rows[a][p][0] for p in paths], [rows[b][p][0] for p in paths])[0]
        print(f"| {a} / {b} | {rho:.3f} |")

    print("\n| row | validation image AUROC by epoch |\n|---|---|")
    for row in rows:
        curve = validation_curve(args.output / row)
        steps_per_epoch = curve[0][0] // 10 + 1 if curve else 1  # validated every 10 epochs
        print(f"| {row} | " + ", ".join(f"{round((step + 1) / steps_per_epoch)}: {value:.3f}"
                                        for step, value in curve) + " |")


if __name__ == "__main__":
    main()
