"""The patch-feature scorers: PatchCore (a memory bank and its search) and PaDiM (a Gaussian per
grid position).

Both describe every patch with a frozen :class:`~adlight.nets.patch_features.PatchFeatures`,
score each patch (N x h x w), upsample that grid to the image, smooth it, and take the map's
maximum as the image score (``adlight.models.patch`` fits the heads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.nets.maps import smooth
from adlight.nets.memory_bank import BankSearch
from adlight.nets.precision import full_precision
from adlight.nets.scorers.base import LOCALISING, Scorer

#: backbone input pixels per chunk on the CPU (4 images at 256 px, 1 at 512 px; measured in
#: ``benchmarks/patch_batch_size.py``)
BACKBONE_CHUNK_PIXELS = 4 * 256 * 256


@torch.no_grad()
def chunked_patch_features(features: nn.Module, images: Tensor) -> Tensor:
    """Patch features of a batch, the backbone run on chunks of :data:`BACKBONE_CHUNK_PIXELS`.

    A large batch through the backbone at once is slower per image on a CPU (its activations
    leave the cache: see ``benchmarks/patch_batch_size.py``), so a batch of 32 costs what 32
    chunks cost. A traced export runs it whole: a split would fix the batch size of the graph.
    """
    height, width = features.backbone.input_shape
    per_chunk = max(1, BACKBONE_CHUNK_PIXELS // (height * width))
    if images.shape[0] <= per_chunk or images.device.type != "cpu" or torch.jit.is_tracing():
        return features(images)
    return torch.cat([features(chunk) for chunk in images.split(per_chunk)])


class PatchScorer(Scorer):
    """Patch features -> patch scores (:meth:`patch_scores`, per subclass) -> map and score.

    Args:
        features: the patch representation (frozen; shared with the LightningModule).
        smoothing_sigma: Gaussian blur of the upsampled map, in image pixels (0: none).
    """

    outputs = LOCALISING

    def __init__(self, features: nn.Module, smoothing_sigma: float) -> None:
        super().__init__()
        self.features = features
        self.smoothing_sigma = float(smoothing_sigma)

    def patch_scores(self, features: Tensor) -> Tensor:
        """N x D x h x w patch features (float32) -> N x h x w patch scores."""
        raise NotImplementedError

    def maps_from_patch_scores(self, scores: Tensor, size) -> Tensor:
        """N x h x w patch scores -> N x 1 x H x W maps: upsampled, then smoothed."""
        maps = F.interpolate(scores.unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)
        return smooth(maps, self.smoothing_sigma)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        # the backbone runs in the trainer's precision; distances and maps in float32
        # (under bf16 autocast a distance keeps 3 digits: ties in pixel AUROC)
        features = chunked_patch_features(self.features, images).float()
        with full_precision(features):
            maps = self.maps_from_patch_scores(self.patch_scores(features), images.shape[-2:])
        return maps.flatten(1).amax(1), maps


class PatchCoreScorer(PatchScorer):
    """A patch's score is its mean distance to its ``search.k`` nearest memory-bank patches."""

    def __init__(self, features: nn.Module, search: BankSearch, smoothing_sigma: float) -> None:
        super().__init__(features, smoothing_sigma)
        self.search = search

    def patch_scores(self, features: Tensor) -> Tensor:
        n, d, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(-1, d)
        return self.search(queries).mean(1).reshape(n, h, w)


class PadimScorer(PatchScorer):
    """A patch's score is its Mahalanobis distance to the Gaussian of its grid position.

    Args:
        mean: positions x D; precision: positions x D x D (inverse covariances).
    """

    def __init__(self, features: nn.Module, mean: Tensor, precision: Tensor, smoothing_sigma: float) -> None:
        super().__init__(features, smoothing_sigma)
        self.register_buffer("mean", mean)
        self.register_buffer("precision", precision)

    def patch_scores(self, features: Tensor) -> Tensor:
        n, d, h, w = features.shape
        if h * w != self.mean.shape[0] or d != self.mean.shape[1]:
            raise ConfigError(
                f"PaDiM was fitted on a grid of {self.mean.shape[0]} positions x "
                f"{self.mean.shape[1]} features; these images give {h}x{w} x {d} "
                "(a different backbone input_size or layers?)"
            )
        centred = features.permute(2, 3, 0, 1).reshape(h * w, n, d) - self.mean[:, None]
        # squared Mahalanobis distance per position: (x - mu)^T Sigma^-1 (x - mu)
        squared = (torch.bmm(centred, self.precision) * centred).sum(-1)  # positions x N
        return squared.clamp_min(0.0).sqrt().T.reshape(n, h, w)
