"""The image threshold from held-out training normals, where the validation split is too small.

The datamodule holds a share of the training normals out of training when its validation
split has too few images of a class for an F1-optimal threshold
(:mod:`adlight.data.threshold_normals`; ``threshold_normals``, ``min_val_images``). Where it
did, the image threshold is the :data:`NORMAL_QUANTILE` quantile of those normals' scores
with the current weights: about one normal in a hundred is flagged, whatever the anomalies
look like (the validation split still reports its AUROC). The number of normals it came from
is a buffer (``image_threshold_normals``), so a checkpoint's report says the same source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from adlight.models.base import AnomalyModule

#: the quantile of the held-out normals' scores taken as the image threshold (linear
#: interpolation; with 20 normals it lies between the highest two)
NORMAL_QUANTILE = 0.99

VALIDATION_SOURCE = "validation split, F1-optimal"


def threshold_normals_loader(module: AnomalyModule):
    """The datamodule's held-out threshold normals (``None``: it held none out)."""
    trainer = getattr(module, "_trainer", None)
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    make = getattr(datamodule, "threshold_normals_dataloader", None)
    return make() if callable(make) else None


def image_threshold_from_normals(module: AnomalyModule) -> tuple[float, int] | None:
    """``(threshold, number of normals)`` from the held-out training normals, or ``None``
    when the datamodule held none out (the validation split then chooses)."""
    loader = threshold_normals_loader(module)
    if loader is None:
        return None
    scores = module.validation_outputs(loader).score.double()
    if scores.numel() == 0:
        return None
    return float(torch.quantile(scores, NORMAL_QUANTILE)), int(scores.numel())


def image_threshold_source(normals: int) -> str:
    """The report's ``image_threshold_source`` of a threshold chosen from ``normals`` normals
    (0: on the validation split)."""
    if normals <= 0:
        return VALIDATION_SOURCE
    return (f"held-out training normals: the {NORMAL_QUANTILE} quantile of {normals} scores "
            "(the validation split has too few images of a class for an F1-optimal one)")
