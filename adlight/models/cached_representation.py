"""A head on a frozen image-level representation whose features may be cached on disk.

The one-class SVM (Andrews et al.) and the nearest-neighbour head (DN2) share everything up to
their head: a representation from [0, 1] images to N x D features, an optional
:class:`~adlight.nets.feature_cache.FeatureCache` keyed by the representation's ``cache_key()``,
saved after every stage, and the head's features being those (maybe cached) features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.models.base import ThresholdArg
from adlight.models.fitted_head import FrozenFeaturesModule
from adlight.nets.feature_cache import FeatureCache


class CachedRepresentationModule(FrozenFeaturesModule):
    """Args:
        representation: module from [0, 1] images to N x D features (frozen).
        feature_cache: a folder for cached features (``None``: no cache); a re-run with the
            same representation and images skips extraction.
    """

    def __init__(self, representation: nn.Module, feature_cache: str | None = None,
                 image_threshold: ThresholdArg = "val_f1", num_examples: int = 4) -> None:
        super().__init__(image_threshold, None, num_examples)
        self.representation = representation.requires_grad_(False)
        self.feature_cache_dir = feature_cache
        self._cache: FeatureCache | None = None

    described_networks = ("representation",)

    @property
    def extractor(self) -> nn.Module:
        return self.representation

    @property
    def cache(self) -> FeatureCache | None:
        if self.feature_cache_dir is None:
            return None
        if self._cache is None:
            key = getattr(self.representation, "cache_key", None)
            if key is None:
                raise ConfigError(
                    f"feature_cache needs a representation with cache_key(); "
                    f"{type(self.representation).__name__} has none"
                )
            self._cache = FeatureCache(self.feature_cache_dir, key(), rank=self.global_rank)
        return self._cache

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        if self.cache is None:
            return self.representation(images).float()
        return self.cache.features(images, lambda x: self.representation(x).float())

    def _save_cache(self) -> None:
        if self._cache is not None:
            self._cache.save()

    def on_train_end(self) -> None:
        super().on_train_end()  # may fit the head: its features go into the cache too
        self._save_cache()

    def on_validation_end(self) -> None:
        self._save_cache()

    def on_test_end(self) -> None:
        self._save_cache()

    def on_predict_end(self) -> None:
        self._save_cache()

    def head_features(self, batch: dict) -> Tensor:
        return self.features(batch["image"])
