"""Image representations for one-class heads (plain torch).

Each maps [0, 1] images (N x C x H x W) to one vector per image (N x D) and says, in
:meth:`cache_key`, everything that determines that vector, so extracted features can be
cached on disk (see ``adlight/nets/feature_cache.py``).

- :class:`TransferFeatures`: Andrews et al.'s transferred representations: the output of
  one or more layers of a pretrained :class:`~adlight.nets.backbones.Backbone` (the
  analogues of VGG-F's P5 / FC6 / FC7 / FC8), each pooled globally or to a small grid,
  then rescaled to unit length.
- :class:`RawPixels`: their "GS" baseline: the grayscale intensities themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adlight.checks import is_int
from adlight.errors import ConfigError
from adlight.nets.backbones import Backbone, pool_feature_map


class TransferFeatures(nn.Module):
    """Pooled, unit-length features from named layers of a backbone.

    Args:
        backbone: the :class:`Backbone` (its weights, input size and normalisation).
        layers: layer names (``blocks.4``, ``pre_logits``, ``logits``...); several are
            concatenated after each is pooled and rescaled to unit length.
        pool: ``"avg"`` / ``"max"`` (global), ``"avg_std"`` (each channel's global mean and
            standard deviation) or an int g: average-pool feature maps to a
            g x g grid and flatten, which keeps the spatial layout (the paper's P5 keeps
            its 6 x 6). Ignored for vector taps (``pre_logits``, ``logits``).
        unit_length: rescale each image's vector to unit L2 norm (Andrews et al.).
    """

    def __init__(
        self,
        backbone: Backbone,
        layers: str | Sequence[str] = "pre_logits",
        pool: str | int = "avg",
        unit_length: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise ConfigError(f"backbone must be an adlight.nets.Backbone, got {type(backbone).__name__}")
        self.backbone = backbone
        self.layers = backbone.check_layers(layers)
        pool_feature_map(torch.zeros(1, 1, 2, 2), pool)  # checks pool
        self.pool = pool
        self.unit_length = unit_length
        # frozen: Andrews et al. use the pretrained layers as they are
        self.backbone.requires_grad_(False)
        self.train(False)  # Lightning never calls train() on entering fit; be in eval mode now

    def train(self, mode: bool = True):
        # BatchNorm statistics stay those of pretraining, whatever the trainer asks
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        return self.pool_taps(self.backbone.taps(images, self.layers))

    def pool_taps(self, taps: dict[str, Tensor]) -> Tensor:
        """The representation from already computed :meth:`Backbone.taps` outputs (so one
        forward pass can serve several representations, as the benchmark does)."""
        parts = [pool_feature_map(taps[name].float(), self.pool) for name in self.layers]
        if self.unit_length:
            parts = [F.normalize(p, dim=1) for p in parts]
        out = torch.cat(parts, dim=1)
        return F.normalize(out, dim=1) if self.unit_length and len(parts) > 1 else out

    def identity(self) -> dict[str, str]:
        """The fields a fitted head depends on (the backbone's, then the layers and pooling)."""
        return {**self.backbone.identity(), "layers": str(self.layers), "pool": str(self.pool),
                "unit_length": str(self.unit_length)}

    def cache_key(self) -> str:
        return f"transfer|{self.backbone.cache_key()}|{self.layers}|{self.pool}|{self.unit_length}"


class RawPixels(nn.Module):
    """Grayscale intensities as the representation (Andrews et al.'s GS baseline).

    Args:
        size: images are resized to ``size x size`` first (``None``: as given).
        grayscale: average RGB to one channel.
        unit_length: rescale each vector to unit L2 norm.
    """

    def __init__(self, size: int | None = None, grayscale: bool = True, unit_length: bool = True) -> None:
        super().__init__()
        if size is not None and (not is_int(size) or size < 1):
            raise ConfigError(f"size must be an int >= 1 or null, got {size!r}")
        self.size = size
        self.grayscale = grayscale
        self.unit_length = unit_length

    def forward(self, images: Tensor) -> Tensor:
        if self.grayscale and images.shape[1] == 3:
            images = images.mean(dim=1, keepdim=True)
        if self.size is not None and images.shape[-2:] != (self.size, self.size):
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear",
                                   align_corners=False, antialias=True)
        out = images.float().flatten(1)
        return F.normalize(out, dim=1) if self.unit_length else out

    def identity(self) -> dict[str, str]:
        """The fields a fitted head depends on."""
        return {"representation": "raw pixels", "size": str(self.size), "grayscale": str(self.grayscale),
                "unit_length": str(self.unit_length)}

    def cache_key(self) -> str:
        return f"raw|{self.size}|{self.grayscale}|{self.unit_length}"
