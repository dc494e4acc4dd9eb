"""What one evaluation epoch produced, gathered from every process and de-duplicated."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics.aggregation import CatMetric


@dataclass
class EpochOutputs:
    """Everything one evaluation epoch produced, gathered from every process."""

    index: Tensor
    score: Tensor
    label: Tensor
    class_id: Tensor
    anomaly_map: Tensor | None = None  # N x H x W
    mask: Tensor | None = None  # N x H x W
    # N x K: scores of K variants of one model (e.g. OCSVMs fitted with K values of nu)
    score_sweep: Tensor | None = None

    @property
    def has_pixels(self) -> bool:
        return self.anomaly_map is not None and self.mask is not None


def drop_repeated_indices(indices: Tensor) -> Tensor:
    """Positions keeping the first copy of each index, in index order (DistributedSampler pads with repeats)."""
    order = torch.argsort(indices, stable=True)
    keep = torch.ones_like(order, dtype=torch.bool)
    keep[1:] = indices[order][1:] != indices[order][:-1]
    return order[keep]


class EpochCollector(torch.nn.Module):
    """Collects per-image outputs over an epoch, synchronised across processes.

    Built on torchmetrics' ``CatMetric`` so gathering over DDP ranks is torchmetrics'
    job; :meth:`compute` then drops the duplicates that a ``DistributedSampler`` pads
    the last batch with, using each sample's dataset ``index``.
    """

    FIELDS = ("index", "score", "label", "class_id", "anomaly_map", "mask", "score_sweep")

    def __init__(self) -> None:
        super().__init__()
        for field in self.FIELDS:
            self.add_module(field, CatMetric(nan_strategy="disable"))
        self._map_shape: tuple[int, int] | None = None

    def update(self, batch: dict, outputs: dict) -> None:
        n = outputs["score"].shape[0]
        self.index.update(batch["index"].float())
        self.score.update(outputs["score"].detach().float())
        self.label.update(batch["label"].float())
        class_id = batch.get("class_id", torch.full((n,), -1, device=outputs["score"].device))
        self.class_id.update(class_id.float())
        if "anomaly_map" in outputs and "mask" in batch:
            amap = outputs["anomaly_map"].detach().float()
            self._map_shape = tuple(amap.shape[-2:])
            self.anomaly_map.update(amap.reshape(n, -1))
            self.mask.update(batch["mask"].reshape(n, -1).float())
        if "score_sweep" in outputs:
            self.score_sweep.update(outputs["score_sweep"].detach().float().reshape(n, -1))

    def compute(self) -> EpochOutputs:
        # torchmetrics' CatMetric returns a 0-d tensor for an epoch of one image (measured:
        # a one-image validation split raised IndexError here); every field is 1-d from here on
        index = self.index.compute().long().reshape(-1)
        order = drop_repeated_indices(index)
        out = EpochOutputs(
            index=index[order],
            score=self.score.compute().reshape(-1)[order],
            label=self.label.compute().long().reshape(-1)[order],
            class_id=self.class_id.compute().long().reshape(-1)[order],
        )
        if self.anomaly_map.update_called and self._map_shape is not None:
            h, w = self._map_shape
            out.anomaly_map = self.anomaly_map.compute().reshape(-1, h, w)[order]
            out.mask = self.mask.compute().reshape(-1, h, w)[order]
        if self.score_sweep.update_called:
            sweep = self.score_sweep.compute()
            out.score_sweep = sweep.reshape(index.numel(), -1)[order]
        return out

    @property
    def updated(self) -> bool:
        return self.score.update_called

    def reset(self) -> None:
        for field in self.FIELDS:
            getattr(self, field).reset()
