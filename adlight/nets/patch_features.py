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
  the channels: ``N x D x h x w``, D the sum of the stages' channels;
- optionally (``tile_size``) cuts the preprocessed image into overlapping tiles, computes
  the above per tile and stitches the tiles' grids into the whole image's grid
  (:mod:`adlight.nets.tiling`): the backbone never sees more than a tile at once, and the
  heads, maps and thresholds see the same ``N x D x h x w`` as without tiles.

The backbone stays in eval mode with frozen weights whatever the trainer asks: the
features are those of pretraining.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adlight.checks import is_int
from adlight.errors import ConfigError
from adlight.nets.backbones import HEAD_TAPS, Backbone
from adlight.nets.batchnorm_folding import folded_copy
from adlight.nets.tiling import TileLayout


class PatchFeatures(nn.Module):
    """Multi-stage, locally averaged patch features on a common grid.

    Args:
        backbone: the :class:`Backbone` (weights, input size, normalisation). Its
            ``input_size`` sets the resolution the backbone sees, hence the grid: 256 px
            with ``blocks.2`` (stride 8) gives a 32 x 32 grid, ``[640, 256]`` an 80 x 32 one.
        layers: module names of feature maps (``blocks.2``, ``blocks.4``, ...); vector taps
            (``pre_logits``, ``logits``) have no spatial layout and are refused.
        neighbourhood: side of the local averaging window in grid cells (odd; 1 = none).
        tile_size: ``null`` (the backbone sees the whole ``input_size`` image) or the side in
            pixels of the overlapping tiles it sees instead; a multiple of the grid's stride,
            at most ``input_size`` (which must then be a multiple of the stride too).
        tile_overlap: pixels shared by neighbouring tiles (a multiple of the stride, below
            ``tile_size``); each grid cell comes from the tile where it is farthest from a
            border, so cells within ``tile_overlap / 2`` of a tile border are never used.
    """

    def __init__(
        self,
        backbone: Backbone,
        layers: str | Sequence[str] = ("blocks.2", "blocks.4"),
        neighbourhood: int = 3,
        tile_size: int | None = None,
        tile_overlap: int = 64,
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
        if not is_int(neighbourhood) or neighbourhood < 1 \
                or neighbourhood % 2 == 0:
            raise ConfigError(f"neighbourhood must be an odd int >= 1, got {neighbourhood!r}")
        self.neighbourhood = neighbourhood
        self.backbone.requires_grad_(False)
        # channels-last convolutions: measured on 2 CPU cores, EfficientNet-Lite0 up to
        # blocks.4 at 256 px, 16 ms per image in batches of 4; contiguous, in batches of 16,
        # 43 ms (channels-last is also what GPUs' tensor cores prefer)
        self.backbone.to(memory_format=torch.channels_last)
        self.train(False)  # Lightning never calls train() on entering fit; be in eval mode now
        # the backbone with BatchNorm folded (adlight/nets/batchnorm_folding.py), keyed by the
        # weights it was made from: a checkpoint loaded later, or a move, makes a new one
        self._folded: tuple[tuple, nn.Module | None] | None = None
        self.tiles = None if tile_size is None else self._tile_layout(tile_size, tile_overlap)
        # one pass on a blank image tells the channels and the grid, and checks that every
        # layer yields a feature map, at construction instead of in the middle of fitting
        with torch.no_grad():
            probe = self.forward(torch.zeros(1, 3, *backbone.input_shape))
        self.feature_dim = int(probe.shape[1])
        self.grid_size = (int(probe.shape[2]), int(probe.shape[3]))

    def _tile_layout(self, tile_size, tile_overlap) -> TileLayout:
        for argument, value, least in (("tile_size", tile_size, 1), ("tile_overlap", tile_overlap, 0)):
            if not is_int(value) or value < least:
                raise ConfigError(f"{argument} must be an int >= {least} (pixels), got {value!r}")
        if not isinstance(self.backbone.input_size, int):
            raise ConfigError(f"tile_size needs a square backbone input_size (an int), got "
                              f"input_size={list(self.backbone.input_size)}: set tile_size null")
        if tile_size > self.backbone.input_size:
            raise ConfigError(f"tile_size={tile_size} is larger than the backbone's "
                              f"input_size={self.backbone.input_size}")
        # the stride of the finest tapped stage, from one pass over a blank tile
        with torch.no_grad():
            cells = self.grid_features(torch.zeros(1, 3, tile_size, tile_size)).shape[-1]
        if tile_size % cells:
            raise ConfigError(f"tile_size={tile_size} is not a multiple of the feature grid's stride "
                              f"(about {round(tile_size / cells)} px: {cells} cells per tile)")
        return TileLayout(self.backbone.input_size, tile_size, tile_overlap, tile_size // cells)

    def identity(self) -> dict[str, str]:
        """The fields a fitted head depends on (the backbone's, then the layers, window and tiles)."""
        tiles = "none" if self.tiles is None else f"{self.tiles.tile} px, overlap {self.tiles.overlap} px"
        return {**self.backbone.identity(), "layers": str(self.layers),
                "neighbourhood": str(self.neighbourhood), "tiles": tiles}

    def train(self, mode: bool = True):
        # BatchNorm statistics stay those of pretraining, whatever the trainer asks
        return super().train(False)

    def forward(self, images: Tensor) -> Tensor:
        """[0, 1] images N x C x H x W -> patch features N x D x h x w (float32)."""
        inputs = self.backbone.preprocess(images)
        if self.tiles is None:
            return self.grid_features(inputs)
        # one tile position at a time (the batch's tiles together): the backbone's activations
        # are those of one tile, whatever the image size
        return self.tiles.stitch([self.grid_features(tile) for tile in self.tiles.split(inputs)])

    def _folded_network(self, inputs: Tensor) -> nn.Module | None:
        """The folded backbone for these weights, or ``None`` (run the original) where folding
        does not apply: under gradients, in a traced export (its graph keeps the original)."""
        if torch.is_grad_enabled() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return None
        parameters = list(self.backbone.model.parameters())
        # in-place loads (load_state_dict) bump a tensor's version; moves make new tensors
        key = (inputs.device, tuple((p.data_ptr(), p._version, p.dtype) for p in parameters))
        if self._folded is None or self._folded[0] != key:
            probe = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(inputs.device)
            network = folded_copy(self.backbone.model,
                                  lambda net, x: self.backbone.network_taps(x, self.layers, net), probe)
            self._folded = (key, network)
        return self._folded[1]

    def grid_features(self, inputs: Tensor) -> Tensor:
        """Preprocessed inputs (an image or a tile) -> their patch features on their own grid."""
        taps = self.backbone.network_taps(inputs, self.layers, self._folded_network(inputs))
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
