"""A discriminator on adapted patch features (SimpleNet, Liu et al., CVPR 2023), plain torch.

SimpleNet's idea, on the offline backbones: a frozen pretrained network describes every patch
(:class:`~adlight.nets.patch_features.PatchFeatures`); a linear **adaptor** maps those features
to a space of their own; **synthetic anomalies** are the adapted normal features plus Gaussian
noise; a small MLP **discriminator** learns to tell the two apart (SimpleNet's truncated L1
loss). At test time a patch's anomaly score is minus the discriminator's output, the grid of
scores is upsampled to the image and blurred, and the image score is the map's maximum.

Everything after the backbone works on feature vectors, so training costs seconds once the
training normals' features are computed (the backbone never runs backward, and its features
are computed once: :class:`~adlight.models.FeatureDiscriminatorModel` caches them).

The features are standardised per channel with the training normals' mean and standard
deviation (buffers set by :meth:`FeatureDiscriminator.set_standardisation`) before the
adaptor, so that ``noise_std`` means the same whatever backbone or layers feed it.

:class:`FeatureDiscriminator` in eval mode is the whole inference path: ``forward`` takes
[0, 1] images and returns ``(score, anomaly_map)`` (the scorer interface).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adlight.checks import is_int, is_number
from adlight.errors import ConfigError
from adlight.nets.maps import smooth
from adlight.nets.patch_features import PatchFeatures


def truncated_l1_loss(normal_logits: Tensor, synthetic_logits: Tensor, margin: float) -> Tensor:
    """SimpleNet's loss: normal patches pushed above ``margin``, synthetic ones below
    ``-margin``; patches already beyond their margin cost nothing."""
    return (F.relu(margin - normal_logits).mean() + F.relu(margin + synthetic_logits).mean())


class FeatureDiscriminator(nn.Module):
    """Frozen patch features -> adaptor -> discriminator: a patch-level anomaly scorer.

    Args:
        features: the frozen patch representation.
        hidden: width of the discriminator's hidden layer (SimpleNet: 1024 at 1536 features).
        adaptor: learn a linear map of the (standardised) features before the discriminator
            (SimpleNet's feature adaptor); ``false`` feeds the discriminator directly.
        smoothing_sigma: Gaussian blur of the upsampled map, in image pixels (0: none).
    """

    outputs = ("score", "anomaly_map")

    def __init__(self, features: PatchFeatures, hidden: int = 1024, adaptor: bool = True,
                 smoothing_sigma: float = 4.0) -> None:
        super().__init__()
        if not isinstance(features, PatchFeatures):
            raise ConfigError(f"features must be an adlight.nets.PatchFeatures, got {type(features).__name__}")
        if not is_int(hidden) or hidden < 1:
            raise ConfigError(f"hidden must be an int >= 1, got {hidden!r}")
        if not is_number(smoothing_sigma) or smoothing_sigma < 0:
            raise ConfigError(f"smoothing_sigma must be a number >= 0, got {smoothing_sigma!r}")
        self.features = features.requires_grad_(False)
        dim = features.feature_dim
        self.adaptor = nn.Linear(dim, dim) if adaptor else nn.Identity()
        self.discriminator = nn.Sequential(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, 1))
        self.smoothing_sigma = float(smoothing_sigma)
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))

    @property
    def feature_dim(self) -> int:
        return self.features.feature_dim

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # frozen: BatchNorm keeps the pretrained statistics
        return self

    @torch.no_grad()
    def set_standardisation(self, patches: Tensor) -> None:
        """Per-channel mean and standard deviation of training patch features (rows x D)."""
        patches = patches.float()
        self.feature_mean.copy_(patches.mean(0))
        self.feature_std.copy_(patches.std(0).clamp_min(1e-6))

    def patch_rows(self, images: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """[0, 1] images -> their patch features as rows (N h w x D) and (N, h, w)."""
        grid = self.features(images).float()
        n, d, h, w = grid.shape
        return grid.permute(0, 2, 3, 1).reshape(n * h * w, d), (n, h, w)

    def adapt(self, rows: Tensor) -> Tensor:
        return self.adaptor((rows.float() - self.feature_mean) / self.feature_std)

    def normality(self, adapted: Tensor) -> Tensor:
        """The discriminator's output per row: high for normal patches."""
        return self.discriminator(adapted).squeeze(-1)

    def loss(self, rows: Tensor, noise_std: float, margin: float = 0.5,
             generator: torch.Generator | None = None) -> Tensor:
        """SimpleNet's training loss on a batch of normal patch feature rows (rows x D)."""
        adapted = self.adapt(rows)
        noise = torch.randn(adapted.shape, generator=generator, device=adapted.device) * noise_std
        logits = self.normality(torch.cat([adapted, adapted + noise]))
        return truncated_l1_loss(logits[: len(adapted)], logits[len(adapted):], margin)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """[0, 1] images N x C x H x W -> (score N, anomaly_map N x 1 x H x W)."""
        rows, (n, h, w) = self.patch_rows(images)
        scores = -self.normality(self.adapt(rows)).reshape(n, 1, h, w)
        maps = F.interpolate(scores, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
        maps = smooth(maps, self.smoothing_sigma)
        return maps.flatten(1).amax(1), maps
