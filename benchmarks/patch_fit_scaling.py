"""Benchmark: PatchCore's fit time per training image as the training set grows (issue 25).

    python benchmarks/patch_fit_scaling.py [--data ../shared/data/ham10000] \
        [--config configs/patch_features/mvtec_patchcore.yaml] [--counts 200 800 3000] \
        [--coreset-chunks 65536 none]

The training images are the first N nevi (``dx == nv``) of HAM10000's metadata, resized to
the config's backbone input size; the model is the config's PatchCore (``AdlightCLI`` with
``run=False``, so the shipped recipe is what is measured). A fit here is what ``adlight fit``
does to the training normals: their patch features in batches (``head_features``) and the
memory bank (``compute_head``: the greedy coreset per chunk of images). The features are
extracted once, in order: N's feature seconds are the time to its N-th image (the same work a
fit on N images does); each ``--coreset-chunks`` setting fits the bank on every prefix. Reading the JPEGs and Lightning's loop are left out (linear in
N). Prints one row per N and setting: seconds for the features and for the coreset, fit
seconds per image, the bank's size, and each row's per-image time against the first N's (the
issue's target: within 1.5x at 3,000 against 200).
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
from adlight.data.image_tensors import load_image

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


def extract(model, paths: list[Path], size: int, first: int = 0, batch: int = 4) -> tuple[torch.Tensor, float]:
    """Candidates of ``paths`` (N x K x D, dataset indices from ``first``) and the feature seconds."""
    parts, seconds = [], 0.0
    for start in range(0, len(paths), batch):
        images = torch.stack([F.interpolate(load_image(p)[None], size=(size, size), mode="bilinear",
                                            antialias=True, align_corners=False)[0]
                              for p in paths[start:start + batch]]).clamp(0, 1)
        begin = time.perf_counter()
        with torch.no_grad():
            index = torch.arange(first + start, first + start + len(images))
            parts.append(model.head_features({"image": images, "index": index}))
        seconds += time.perf_counter() - begin
    return torch.cat(parts), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent.parent / "shared" / "data" / "ham10000")
    parser.add_argument("--config", type=Path, default=ROOT / "configs/patch_features/mvtec_patchcore.yaml")
    parser.add_argument("--counts", type=int, nargs="+", default=[200, 800, 3000])
    parser.add_argument("--coreset-chunks", nargs="+", default=["65536"],
                        help="coreset_chunk settings to compare (ints, or 'none': one coreset)")
    args = parser.parse_args()
    model = AdlightCLI(run=False, args=[f"--config={args.config}"]).model.eval()
    size = model.features.backbone.input_size
    print(f"# {date.today()} {platform.node()}, {torch.get_num_threads()} threads, under load; "
          f"{args.config.name} at {size} px, {model.candidates_per_image()} candidates per image, "
          f"coreset_fraction {model.coreset_fraction}")
    paths = nevi(args.data, max(args.counts))
    print("| coreset_chunk | training images | features s | coreset s | fit s | fit ms per image "
          "| coreset ms per image | bank rows | fit per image vs first |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    candidates, features_s, first = [], 0.0, {}
    for count in sorted(args.counts):  # features extended image by image, each fit on a prefix
        done = sum(len(part) for part in candidates)
        more, seconds = extract(model, paths[done:count], size, first=done)
        candidates.append(more)
        features_s += seconds
        everything = torch.cat(candidates)
        for chunk in args.coreset_chunks:
            model.coreset_chunk = None if chunk == "none" else int(chunk)
            begin = time.perf_counter()
            bank = model.compute_head(everything)["memory_bank"]
            coreset_s = time.perf_counter() - begin
            per_image = (features_s + coreset_s) / count
            first.setdefault(chunk, per_image)
            print(f"| {chunk} | {count} | {features_s:.1f} | {coreset_s:.1f} | {features_s + coreset_s:.1f} "
                  f"| {per_image * 1000:.1f} | {coreset_s / count * 1000:.1f} | {bank.shape[0]} "
                  f"| {per_image / first[chunk]:.2f}x |", flush=True)

if __name__ == "__main__":
    main()
