"""Benchmark: Minhas & Zelek Table I (CIFAR-10, one class anomalous at a time), on CPU.

    python benchmarks/minhas_cifar10.py --root ../shared/data/cifar10 \
        --config minhas_zelek/cifar10_efficientnet_lite0_fixed --train 500 --test 500 --epochs 3

For each CIFAR-10 class c, runs ``adlight fit`` (then test) with the given config: class c is
the anomaly, the normals an equal-sized random sample of the other nine classes, from the
class folders of ``--root``/train and ``--root``/test. Prints a Markdown table shaped like the
paper's Table I (AUROC per class) plus F1, precision, recall at the classifier's own 0.5
threshold, the confusion counts and the fit time, and the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from adlight.cli import main as adlight

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def run(c: str, args, out: Path) -> dict:
    adlight(["fit", f"--config={ROOT / 'configs' / (args.config + '.yaml')}",
             "--data.source=folder", f"--data.root={args.root / 'train'}",
             f"--data.test_root={args.root / 'test'}", "--data.download=false",
             f"--data.anomaly_classes=[{c}]", f"--data.train_per_class={args.train}",
             f"--data.test_per_class={args.test}", f"--trainer.max_epochs={args.epochs}",
             f"--model.network.init_args.input_size={args.input_size}",
             f"--trainer.default_root_dir={out}", "--trainer.enable_progress_bar=false",
             "--report.figures=false"])
    return json.loads(next(out.rglob("metrics.json")).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/cifar10"))
    parser.add_argument("--config", default="minhas_zelek/cifar10_efficientnet_lite0_fixed")
    parser.add_argument("--train", type=int, default=500, help="training images per side")
    parser.add_argument("--test", type=int, default=500, help="test images per side")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--classes", nargs="+", default=CLASSES)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in args.classes:
            start = time.perf_counter()
            report = run(c, args, Path(tmp) / c)
            rows.append((c, report, time.perf_counter() - start))

    print(f"# Minhas & Zelek Table I protocol on CIFAR-10 ({date.today()}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads, no GPU)\n")
    print("command: python " + " ".join(sys.argv) + "\n")
    print(f"config {args.config}, input {args.input_size} px, {args.train} + {args.train} "
          f"training images, {args.test} + {args.test} test images, {args.epochs} epochs; "
          "threshold 0.5 on the anomaly-class probability.\n")
    print("| anomaly class | AUROC | F1 | precision | recall | TP | FP | TN | FN | fit + test s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for c, r, seconds in rows:
        print(f"| {c} | {r['image_AUROC']:.3f} | {r['image_F1']:.3f} | {r['image_precision']:.3f} "
              f"| {r['image_recall']:.3f} | {r['image_TP']} | {r['image_FP']} | {r['image_TN']} "
              f"| {r['image_FN']} | {seconds:.0f} |")
    mean = np.mean([r["image_AUROC"] for _, r, _ in rows])
    print(f"| **mean** | {mean:.3f} | | | | | | | | {sum(s for *_, s in rows):.0f} |")


if __name__ == "__main__":
    main()
