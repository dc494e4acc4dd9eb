"""Benchmark: how long the test report's metrics take over millions of pixels, before and after
the one sort that every pixel figure now shares (:mod:`adlight.metrics.ranking`).

    python benchmarks/report_metrics.py [--images 62] [--image-size 256] [--repeats 2]

The shape of an MVTec AD bottle test split (62 images, 20 normal, 42 anomalous in three defect
classes; 4.1M pixels at 256 px, 16.3M at 512 px) with synthetic anomaly maps of that size in
raw score units (smoothed noise, raised inside the defects) and rectangular defect masks; and
a validation split of a third as many images for the F1-optimal pixel threshold. For each
pixel figure it times the previous way (its own sort: torchmetrics, ``pro.aupro``, the
bucketized bootstrap, one AUROC per defect class; each copied here where the library no
longer has it) against the shared sort, checks that both give the same number, and times
``evaluate`` + ``per_class_metrics`` as the test report calls them. Times are the lowest of
the repeats (the machine is shared). Peak memory of the new path: numpy's allocations, which
``tracemalloc`` sees (the sorted arrays are numpy). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import date

import numpy as np
import torch
from torchmetrics.functional.classification import binary_precision_recall_curve

from adlight.metrics import (
    EpochOutputs,
    aupro,
    auroc,
    average_precision,
    evaluate,
    f1_curve,
    f1_optimal_threshold,
    per_class_metrics,
    pixel_ranking,
    rescale_unit,
    threshold_metrics,
)
from adlight.metrics.bootstrap import (
    _auroc_from_histograms,
    _interval,
    _replicate_counts,
    pixel_auroc_interval,
)

CLASS_NAMES = ["good", "broken_large", "broken_small", "contamination"]


def synthetic_outputs(n_images: int, size: int, seed: int = 0) -> EpochOutputs:
    """A test split: a third normal, the rest in three defect classes, masks and maps."""
    generator = torch.Generator().manual_seed(seed)
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


# ----- the previous implementations the library no longer has ---------------------------
def previous_f1_optimal_threshold(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """The threshold from torchmetrics' exact precision-recall curve (a sort of its own)."""
    f1, _ = f1_curve(scores, labels)
    _, _, unit_thresholds = binary_precision_recall_curve(rescale_unit(scores), labels.long(), validate_args=False)
    best = unit_thresholds[int(torch.argmax(f1))]
    return float(scores.double()[rescale_unit(scores) == best].min())


def previous_pixel_auroc_interval(maps: torch.Tensor, masks: torch.Tensor, replicates: int = 1000,
                                  seed: int = 0, pixel_levels: int = 4096) -> tuple[float, float]:
    """Levels from float64 quantiles of a 1M sample, bucketized (before the shared sort)."""
    n = maps.shape[0]
    scores, anomalous = maps.float().reshape(n, -1), masks.reshape(n, -1) != 0
    flat = scores.flatten()
    sample = flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[:1_000_000]]
    edges = torch.quantile(sample.double(), torch.linspace(0, 1, pixel_levels + 1, dtype=torch.float64)[1:-1])
    level_of = torch.bucketize(scores.double(), edges) + torch.arange(n)[:, None] * pixel_levels
    positive = torch.bincount(level_of[anomalous], minlength=n * pixel_levels).reshape(n, -1).double()
    negative = torch.bincount(level_of[~anomalous], minlength=n * pixel_levels).reshape(n, -1).double()
    counts = _replicate_counts(n, replicates, seed)
    return _interval(_auroc_from_histograms(counts @ positive, counts @ negative), 0.95)


def previous_per_class_pixel_auroc(outputs: EpochOutputs) -> list[float]:
    """One AUROC (one sort) per defect class over its images and every normal one."""
    normal = outputs.label == 0
    return [auroc(outputs.anomaly_map[normal | (outputs.class_id == c)], outputs.mask[normal | (outputs.class_id == c)])
            for c in sorted(set(outputs.class_id[~normal].tolist()))]


def lowest_seconds(work: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def same(a: object, b: object, tolerance: float) -> bool:
    a, b = np.atleast_1d(np.asarray(a, dtype=float)), np.atleast_1d(np.asarray(b, dtype=float))
    return bool(np.allclose(a, b, atol=tolerance, rtol=0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=62)
    parser.add_argument("--image-size", type=int, default=256, help="synthetic maps of this size (512: 16.3M pixels)")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    outputs = synthetic_outputs(args.images, args.image_size)
    validation = synthetic_outputs(max(3, args.images // 3), args.image_size, seed=1)
    maps, masks = outputs.anomaly_map, outputs.mask
    pixel_t = float(np.quantile(maps.numpy(), 0.95))
    thresholds = dict(image_threshold=float(outputs.score.median()), pixel_threshold=pixel_t)
    val_maps, val_masks = validation.anomaly_map.flatten(), validation.mask.flatten()

    tracemalloc.start()
    ranked = pixel_ranking(outputs)
    evaluate(outputs, **thresholds, ranked=ranked)
    per_class_metrics(outputs, CLASS_NAMES, **thresholds, ranked=ranked)
    peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()

    sort_s, ranked = lowest_seconds(lambda: pixel_ranking(outputs), args.repeats)
    rows = [  # what, previous way, shared sort, agreement tolerance
        ("pixel AUROC", lambda: auroc(maps, masks), ranked.auroc, 1e-6),
        ("pixel AP", lambda: average_precision(maps, masks), ranked.average_precision, 1e-6),
        ("pixel F1-best (before: 1000 bins; now exact)",
         lambda: float(f1_curve(maps, masks, bins=1000)[0].max()), ranked.f1_best, 1e-3),
        ("pixel AUPRO (FPR <= 0.3)", lambda: aupro(maps, masks), lambda: ranked.aupro(masks, 0.3), 1e-9),
        ("pixel AUROC 95% interval (1000 replicates)", lambda: previous_pixel_auroc_interval(maps, masks),
         lambda: pixel_auroc_interval(maps, masks, ranked=ranked), 2e-3),
        ("pixel F1 / precision / recall at tau",
         lambda: [threshold_metrics(maps, masks, pixel_t)[k] for k in ("F1", "precision", "recall")],
         lambda: [ranked.threshold_metrics(pixel_t)[k] for k in ("F1", "precision", "recall")], 0.0),
        ("per-class pixel AUROC (3 classes)", lambda: previous_per_class_pixel_auroc(outputs),
         lambda: [row["pixel_AUROC"] for name, row in per_class_metrics(outputs, CLASS_NAMES, ranked=ranked).items()
                  if name != "ALL"], 1e-6),
        (f"validation F1-optimal pixel threshold ({validation.label.numel()} images, sort included)",
         lambda: previous_f1_optimal_threshold(val_maps, val_masks), lambda: f1_optimal_threshold(val_maps, val_masks),
         0.0),
    ]
    report_s, _ = lowest_seconds(lambda: (evaluate(outputs, **thresholds, ranked=(shared := pixel_ranking(outputs))),
                                          per_class_metrics(outputs, CLASS_NAMES, **thresholds, ranked=shared)),
                                 args.repeats)
    n_pixels = maps.numel()
    print(f"{args.images} images at {args.image_size} px ({n_pixels / 1e6:.1f}M pixels); {date.today()}, "
          f"{platform.machine()}, {torch.get_num_threads()} threads; lowest of {args.repeats} runs")
    print(f"`python benchmarks/report_metrics.py {' '.join(argv if argv is not None else sys.argv[1:])}`".replace(" `", "`"))
    print()
    print("| what | before (own sort), s | shared sort, s | same value |")
    print("|---|---|---|---|")
    print(f"| the one sort of every pixel (`pixel_ranking`) | | {sort_s:.2f} | |")
    agree = True
    for name, before, after, tolerance in rows:
        before_s, before_value = lowest_seconds(before, args.repeats)
        after_s, after_value = lowest_seconds(after, args.repeats)
        ok = same(before_value, after_value, tolerance)
        agree &= ok or "F1-best" in name  # exact F1-best may exceed the binned one
        print(f"| {name} | {before_s:.2f} | {after_s:.2f} | {ok} |")
    print(f"| `evaluate` + `per_class_metrics` as the test report calls them (sort included) | | {report_s:.2f} | |")
    print()
    print(f"peak numpy memory of the sort + evaluate + per_class_metrics: {peak_mb:.0f} MB "
          f"({n_pixels * 4 / 2**20:.0f} MB per float32 copy of the maps)")
    if not agree or math.isnan(ranked.auroc()):
        sys.exit("the shared sort disagrees with the previous implementation")


if __name__ == "__main__":
    main()
