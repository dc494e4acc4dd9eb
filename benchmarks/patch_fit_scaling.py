"""Benchmark: PatchCore's fit time per training image as the training set grows (issue 25).

    python benchmarks/patch_fit_scaling.py [--data ../shared/data/ham10000] \
        [--config configs/patch_features/mvtec_patchcore.yaml] [--counts 200 800 3000] \
        [--coreset-chunk 65536|none]

The training images are the first N nevi (``dx == nv``) of HAM10000's metadata, resized to
the config's backbone input size; the model is the config's PatchCore (``AdlightCLI`` with
``run=False``, so the shipped recipe is what is measured). A fit here is what ``adlight fit``
does to the training normals: their patch features in batches (``head_features``) and the
memory bank (``compute_head``: the greedy coreset per chunk of images). Reading the JPEGs and
Lightning's loop are left out (they are linear in N). Prints one row per N: seconds for the
features and for the coreset, fit seconds per image, the bank's size, and the ratio of each
row's per-image time to the first row's (the issue's target: within 1.5x at 3,000 against 200).
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

from adlight.cli import AdlightCLI
from adlight.data.images import load_image

ROOT = Path(__file__).resolve().parents[1]


def nevi(root: Path, count: int) -> list[Path]:
    with open(root / "HAM10000_metadata.csv", newline="") as handle:
        ids = [row["image_id"] for row in csv.DictReader(handle) if row["dx"] == "nv"]
    folders = [root / "HAM10000_images_part_1", root / "HAM10000_images_part_2"]
    paths = []
    for image_id in ids:
        path = next((f / f"{image_id}.jpg" for f in folders if (f / f"{image_id}.jpg").is_file()), None)
        if path is not None:
            paths.append(path)
        if len(paths) == count:
            return paths
    raise SystemExit(f"{root} has only {len(paths)} nevi, {count} asked for")


def fit_seconds(model, paths: list[Path], size: int, batch: int = 4) -> tuple[float, float, int]:
    """(features seconds, coreset seconds, bank rows) of one fit on these images."""
    features_s, parts = 0.0, []
    for start in range(0, len(paths), batch):
        images = torch.stack([F.interpolate(load_image(p)[None], size=(size, size), mode="bilinear",
                                            antialias=True, align_corners=False)[0]
                              for p in paths[start:start + batch]]).clamp(0, 1)
        begin = time.perf_counter()
        with torch.no_grad():
            parts.append(model.head_features({"image": images,
                                              "index": torch.arange(start, start + len(images))}))
        features_s += time.perf_counter() - begin
    begin = time.perf_counter()
    head = model.compute_head(torch.cat(parts))
    return features_s, time.perf_counter() - begin, int(head["memory_bank"].shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent.parent / "shared" / "data" / "ham10000")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/patch_features/mvtec_patchcore.yaml")
    parser.add_argument("--counts", type=int, nargs="+", default=[200, 800, 3000])
    parser.add_argument("--coreset-chunk", default=None,
                        help="override the config's coreset_chunk (an int, or 'none': one coreset)")
    args = parser.parse_args()
    overrides = []
    if args.coreset_chunk is not None:
        overrides.append(f"--model.init_args.coreset_chunk={'null' if args.coreset_chunk == 'none' else args.coreset_chunk}")
    model = AdlightCLI(run=False, args=[f"--config={args.config}", *overrides]).model.eval()
    size = model.features.backbone.input_size
    print(f"# {date.today()} {platform.node()}, {torch.get_num_threads()} threads, under load; "
          f"{args.config.name} at {size} px, {model.candidates_per_image()} candidates per image, "
          f"coreset_fraction {model.coreset_fraction}, coreset_chunk {model.coreset_chunk}")
    print("| training images | features s | coreset s | fit s | fit s per image | bank rows | per image vs first |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    first = None
    for count in args.counts:
        features_s, coreset_s, bank = fit_seconds(model, nevi(args.data, count), size)
        per_image = (features_s + coreset_s) / count
        first = first or per_image
        print(f"| {count} | {features_s:.1f} | {coreset_s:.1f} | {features_s + coreset_s:.1f} | "
              f"{per_image * 1000:.1f} ms | {bank} | {per_image / first:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
