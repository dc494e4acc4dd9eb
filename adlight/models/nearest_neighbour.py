"""DN2 (Bergman, Cohen & Hoshen, 2020): k-nearest-neighbour distance on transferred features.

The representation is frozen (``adlight.nets.TransferFeatures``: pooled, unit-length layers
of an ImageNet backbone, as in Andrews et al.); the head is the features of every training
normal, and an image's score is its mean cosine distance to the k nearest of them. Nothing is
fitted but the bank, so one epoch extracts it. On HAM10000 (nevi normal) this head beats the
linear one-class SVM on the same features by about 0.1 AUROC (docs/results.md, "HAM10000: the
best family"): the nevi are many modes (colours, sizes, dermoscopes), which one hyperplane
does not describe.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adlight.checks import is_int
from adlight.errors import ConfigError
from adlight.models.base import ThresholdArg
from adlight.models.cached_representation import CachedRepresentationModule
from adlight.nets.scorers.nearest_neighbour import NearestNeighbourScorer


class NearestNeighbourModel(CachedRepresentationModule):
    """Args:
        representation: module from [0, 1] images to N x D unit-length features (frozen).
        k: neighbours whose cosine distances are averaged (1: the nearest only).
        feature_cache: a folder for cached features (``None``: no cache); a re-run with the
            same representation and images skips extraction.
    """

    def __init__(
        self,
        representation: nn.Module,
        k: int = 1,
        feature_cache: str | None = None,
        image_threshold: ThresholdArg = "val_f1",
        num_examples: int = 4,
    ) -> None:
        super().__init__(representation, feature_cache, image_threshold, num_examples)
        self.save_hyperparameters(ignore=["representation"])
        if not is_int(k) or k < 1:
            raise ConfigError(f"k must be an int >= 1, got {k!r}")
        self.k = int(k)
        self.register_head(bank=torch.empty(0, 0))

    def compute_head(self, features: Tensor) -> dict[str, Tensor]:
        if features.shape[0] < self.k:
            raise ConfigError(f"k={self.k} nearest neighbours need at least {self.k} training "
                              f"normals, got {features.shape[0]}")
        return {"bank": features.float().flatten(1).contiguous()}

    # ----- scoring: adlight.nets.scorers.nearest_neighbour ---------------------------------
    @classmethod
    def examples(cls, image_size: int = 32) -> list[NearestNeighbourModel]:
        from adlight.nets import RawPixels

        return [cls(RawPixels(), k=2)]

    def build_scorer(self) -> NearestNeighbourScorer:
        return NearestNeighbourScorer(self.representation, self.bank, self.k)

    def anomaly_outputs(self, batch: dict) -> dict[str, Tensor]:
        # the scorer's head on the (maybe cached) features: the same numbers as its forward
        features = self.features(batch["image"])
        if self.head_missing_in_sanity_check():
            return {"score": torch.zeros(features.shape[0], device=features.device)}
        self.require_fitted_head()
        return {"score": self.scoring_module().distances(features)}
