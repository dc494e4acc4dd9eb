"""Benchmark: how long the test report's metrics take over millions of pixels.

    python benchmarks/report_metrics.py [--images 62] [--image-size 256] [--repeats 3]

The shape of an MVTec AD bottle test split at 256 px (62 images, 20 normal, 42 anomalous in
three defect classes, so 4.1M pixels), with synthetic anomaly maps in raw score units and
rectangular defect masks. Times, median of the repeats:

- the binned pixel precision-recall curve (1000 thresholds, what ``pixel_F1_best`` needs):
  torchmetrics' ``binary_precision_recall_curve(thresholds=1000)`` against adlight's
  histogram (:func:`adlight.metrics.binned_precision_recall_curve`), with a check that both
  give the same curve;
- :func:`adlight.metrics.evaluate` and :func:`adlight.metrics.per_class_metrics` as the test
  report calls them (image and pixel thresholds given), and, within ``evaluate``, what each of
  the figures for comparing with the literature costs: pixel AP, AUPRO, the bootstrap
  intervals (1000 replicates) and the image AP / F1-max.

Prints a Markdown table and the command that produced it.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date

import torch
from torchmetrics.functional.classification import binary_precision_recall_curve

from adlight.metrics import (
    EpochOutputs,
    aupro,
    average_precision,
    binned_precision_recall_curve,
    evaluate,
    f1_curve,
    per_class_metrics,
    rescale_unit,
)
from adlight.metrics.bootstrap import image_auroc_interval, pixel_auroc_interval

CLASS_NAMES = ["good", "broken_large", "broken_small", "contamination"]


def synthetic_outputs(n_images: int, size: int) -> EpochOutputs:
    """A test split: a third normal, the rest in three defect classes, masks and maps."""
    generator = torch.Generator().manual_seed(0)
    n_normal = n_images // 3
    label = torch.cat([torch.zeros(n_normal), torch.ones(n_images - n_normal)]).long()
    class_id = torch.zeros(n_images, dtype=torch.long)
    class_id[n_normal:] = 1 + torch.arange(n_images - n_normal) % 3
    mask = torch.zeros(n_images, size, size)
    for i in range(n_normal, n_images):
        top, left = torch.randint(0, size * 3 // 4, (2,), generator=generator).tolist()
        mask[i, top:top + size // 6, left:left + size // 4] = 1
    noise = torch.rand(n_images, 1, size, size, generator=generator)
    smooth = torch.nn.functional.avg_pool2d(noise, 5, 1, 2)[:, 0]
    anomaly_map = 20 * (smooth + 0.5 * mask * torch.rand(n_images, size, size, generator=generator))
    return EpochOutputs(index=torch.arange(n_images), score=anomaly_map.flatten(1).amax(1),
                        label=label, class_id=class_id, anomaly_map=anomaly_map, mask=mask)


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=62)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--bins", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    outputs = synthetic_outputs(args.images, args.image_size)
    unit = rescale_unit(outputs.anomaly_map.flatten())
    labels = outputs.mask.flatten().long()
    theirs = binary_precision_recall_curve(unit, labels, thresholds=args.bins)
    mine = binned_precision_recall_curve(unit, labels, args.bins)
    same = all(torch.equal(a.nan_to_num(-1.0), b.nan_to_num(-1.0)) for a, b in zip(mine, theirs, strict=True))

    thresholds = dict(image_threshold=float(outputs.score.median()),
                      pixel_threshold=float(outputs.anomaly_map.quantile(0.95)))
    rows = [
        (f"binned PR curve, torchmetrics ({args.bins} thresholds)",
         lambda: binary_precision_recall_curve(unit, labels, thresholds=args.bins)),
        (f"binned PR curve, adlight histogram ({args.bins} thresholds)",
         lambda: binned_precision_recall_curve(unit, labels, args.bins)),
        ("evaluate (image + pixel metrics)", lambda: evaluate(outputs, **thresholds)),
        ("evaluate without the bootstrap intervals", lambda: evaluate(outputs, **thresholds,
                                                                     bootstrap_replicates=0)),
        ("per_class_metrics (3 classes + ALL)",
         lambda: per_class_metrics(outputs, CLASS_NAMES, **thresholds)),
        ("in evaluate: pixel AP", lambda: average_precision(outputs.anomaly_map, outputs.mask)),
        ("in evaluate: pixel AUPRO (FPR <= 0.3)", lambda: aupro(outputs.anomaly_map, outputs.mask)),
        ("in evaluate: pixel AUROC 95% interval (1000 replicates)",
         lambda: pixel_auroc_interval(outputs.anomaly_map, outputs.mask)),
        ("in evaluate: image AP, F1-max, AUROC 95% interval",
         lambda: (average_precision(outputs.score, outputs.label), f1_curve(outputs.score, outputs.label),
                  image_auroc_interval(outputs.score, outputs.label))),
    ]
    n_pixels = outputs.anomaly_map.numel()
    print(f"{args.images} images at {args.image_size} px ({n_pixels / 1e6:.1f}M pixels); "
          f"{date.today()}, {platform.machine()}, {torch.get_num_threads()} threads; "
          f"histogram curve equal to torchmetrics': {same}")
    print(f"`python benchmarks/report_metrics.py {' '.join(argv if argv is not None else sys.argv[1:])}`".replace(" `", "`"))
    print()
    print("| what | seconds (median) |")
    print("|---|---|")
    for name, work in rows:
        print(f"| {name} | {median_seconds(work, args.repeats):.2f} |")
    if not same:
        sys.exit("the histogram curve differs from torchmetrics'")


if __name__ == "__main__":
    main()
