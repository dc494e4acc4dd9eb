"""Locally aware patch features from several stages of a pretrained backbone (plain torch).

The representation PatchCore (Roth et al., 2022) and PaDiM (Defard et al., 2021) score
image patches with, and the patch-level form of Andrews et al.'s transferred
representations: every position of a mid-level feature map describes one patch of the
image. :class:`PatchFeatures`

- taps two or more stages of a frozen :class:`~adlight.nets.backbones.Backbone` in one
  forward pass (``blocks.2`` + ``blocks.4`` of EfficientNet-Lite0: strides 8 and 16);
- averages each map over a ``neighbourhood x neighbourhood`` window (stride 1), so a
  position also describes its surroundings and small misalignments matter less;
- resizes every map to the grid of the finest tapped stage (bilinear) and concatenates
  the channels: ``N x D x h x w``, D the sum of the stages' channels.

The backbone stays in eval mode with frozen weights whatever the trainer asks: the
features are those of pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.nets.backbones import HEAD_TAPS, Backbone


class PatchFeatures(nn.Module):
    """Multi-stage, locally averaged patch features on a common grid.

    Args:
        backbone: the :class:`Backbone` (weights, input size, normalisation). Its
            ``input_size`` sets the resolution the backbone sees, hence the grid: 256 px
            with ``blocks.2`` (stride 8) gives a 32 x 32 grid.
        layers: module names of feature maps (``blocks.2``, ``blocks.4``, ...); vector taps
            (``pre_logits``, ``logits``) have no spatial layout and are refused.
        neighbourhood: side of the local averaging window in grid cells (odd; 1 = none).
    """

    def __init__(
        self,
        backbone: Backbone,
        layers: str | Sequence[str] = ("blocks.2", "blocks.4"),
        neighbourhood: int = 3,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise ConfigError(f"backbone must be an adlight.nets.Backbone, got {type(backbone).__name__}")
        self.backbone = backbone
        self.layers = backbone.check_layers(layers)
        vector_taps = [name for name in self.layers if name in HEAD_TAPS]
        if vector_taps:
            raise ConfigError(
                f"layers {vector_taps} are pooled vectors with no spatial layout; patch features "
                "need feature maps, e.g. layers: [blocks.2, blocks.4]"
            )
        if isinstance(neighbourhood, bool) or not isinstance(neighbourhood, int) or neighbourhood < 1 \
                or neighbourhood % 2 == 0:
            raise ConfigError(f"neighbourhood must be an odd int >= 1, got {neighbourhood!r}")
        self.neighbourhood = neighbourhood
        self.backbone.requires_grad_(False)
        # channels-last convolutions: measured on 2 CPU cores, EfficientNet-Lite0 up to
        # blocks.4 at 256 px, 16 ms per image in batches of 4; contiguous, in batches of 16,
        # 43 ms (channels-last is also what GPUs' tensor cores prefer)
        self.backbone.to(memory_format=torch.channels_last)
        self.train(False)  # Lightning never calls train() on entering fit; be in eval mode now
        # one pass on a blank image tells the channels and the grid, and checks that every
        # layer yields a feature map, at construction instead of in the middle of fitting
        with torch.no_grad():
            probe = self.forward(torch.zeros(1, 3, backbone.input_size, backbone.input_size))
        self.feature_dim = int(probe.shape[1])
        self.grid_size = (int(probe.shape[2]), int(probe.shape[3]))

    def identity(self) -> dict[str, str]:
        """The fields a fitted head depends on (the backbone's, then the layers and window)."""
        return {**self.backbone.identity(), "layers": str(self.layers),
                "neighbourhood": str(self.neighbourhood)}

    def train(self, mode: bool = True):
        # BatchNorm statistics stay those of pretraining, whatever the trainer asks
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """[0, 1] images N x C x H x W -> patch features N x D x h x w (float32)."""
        taps = self.backbone.taps(images, self.layers)
        maps = []
        for name in self.layers:
            feature_map = taps[name]
            if feature_map.ndim != 4:
                raise ConfigError(
                    f"layer {name!r} of {self.backbone.name} gives a tensor of shape "
                    f"{tuple(feature_map.shape)}, not a feature map N x C x h x w"
                )
            maps.append(feature_map.float())
        grid = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        parts = []
        for feature_map in maps:
            if self.neighbourhood > 1:
                # count_include_pad=False: a border patch is the mean of the cells it has,
                # not damped towards zero by the padding
                feature_map = F.avg_pool2d(feature_map, self.neighbourhood, stride=1,
                                           padding=self.neighbourhood // 2, count_include_pad=False)
            if feature_map.shape[-2:] != grid:
                feature_map = F.interpolate(feature_map, size=tuple(grid), mode="bilinear",
                                            align_corners=False)
            parts.append(feature_map)
        return torch.cat(parts, dim=1)
