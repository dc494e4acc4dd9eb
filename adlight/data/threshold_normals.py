"""Training normals held out to choose the image threshold when the validation split is small.

An F1-optimal threshold on a validation split of a few images per class means little: F1
ignores true negatives, so with many anomalies and five normals it sits at the bottom of the
score range and flags every test normal (issue 25: TN 0 of 19 on unseen data). When the
validation split has fewer than ``min_val_images`` normal or anomalous images and the
datamodule's ``threshold_normals`` share is above 0, that share of the training normals
(seeded, so every process holds out the same ones) leaves the training split; the model takes
a high quantile of their scores as the image threshold (:mod:`adlight.models.normal_threshold`).
With ``threshold_normals`` 0 nothing moves and a warning says how to turn it on.
"""

from __future__ import annotations

import copy

from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset

from adlight.data.datasets import ImageFileDataset, TensorImageDataset
from adlight.data.splits.fractions import hold_out_normals
from adlight.data.transforms import eval_transform
from adlight.errors import SmallValidationWarning


def _counts(dataset: Dataset | None) -> tuple[int, int]:
    labels = [row[1] for row in dataset.rows()] if dataset is not None else []
    return labels.count(0), labels.count(1)


def _split_dataset(dataset: Dataset, fraction: float, seed: int,
                   image_size) -> tuple[Dataset, Dataset] | None:
    """``(train without the held-out normals, the held-out normals without augmentation)``."""
    if isinstance(dataset, ImageFileDataset):
        normals = [s for s in dataset.samples if s.label == 0]
        _, held = hold_out_normals(normals, fraction, seed)
        if not held:
            return None
        held_set = set(held)
        kept = copy.copy(dataset)
        kept.samples = [s for s in dataset.samples if s not in held_set]
        held_view = copy.copy(kept)  # both share the image cache, which is keyed by sample
        held_view.samples = held
        # no augmentation: resized when read already, else by the eval transform
        held_view.transform = None if dataset.resize is not None else eval_transform(image_size)
        return kept, held_view
    if isinstance(dataset, TensorImageDataset):
        normal_positions = [i for i, label in enumerate(dataset.labels) if label == 0]
        picked = hold_out_normals(list(range(len(normal_positions))), fraction, seed)[1]
        held = sorted(normal_positions[j] for j in picked)
        if not held:
            return None
        chosen = set(held)
        augment = getattr(dataset, "augment", dataset.transform)
        kept = dataset.subset([i for i in range(len(dataset)) if i not in chosen], transform=augment)
        return kept, dataset.subset(held, transform=None)
    return None


def hold_out_threshold_normals(splits, fraction: float, min_val_images: int, seed: int, image_size):
    """``splits`` with ``threshold_normals`` held out of train where the validation split is
    too small (see the module's docstring); unchanged otherwise."""
    normal, anomalous = _counts(splits.val)
    if normal + anomalous == 0 or min(normal, anomalous) >= min_val_images:
        return splits  # no validation split (no threshold is chosen), or one large enough
    small = (f"the validation split has {normal} normal and {anomalous} anomalous images, fewer "
             f"than min_val_images={min_val_images} of a class")
    if fraction <= 0:
        rank_zero_warn(
            f"{small}: an F1-optimal image threshold chosen on it is unreliable (it can flag "
            "every normal); set data threshold_normals (e.g. 0.1) to choose it from held-out "
            "training normals, or give a fixed image_threshold", category=SmallValidationWarning)
        return splits
    parts = _split_dataset(splits.train, fraction, seed, image_size)
    if parts is None:
        rank_zero_warn(f"{small}, but threshold_normals={fraction} holds out no training normal: "
                       "the image threshold is chosen on the validation split",
                       category=SmallValidationWarning)
        return splits
    train, held = parts
    rank_zero_warn(
        f"{small}: {len(held)} training normals (threshold_normals={fraction}) are held out of "
        "training, and the image threshold is a high quantile of their scores",
        category=SmallValidationWarning)
    out = copy.copy(splits)
    out.train, out.threshold_normals = train, held
    return out
