"""Overlapping tiles of a square image and the seamless stitching of their feature grids (plain torch).

A :class:`TileLayout` places tiles of ``tile`` pixels at most ``tile - overlap`` pixels apart,
the first and last flush with the borders, and gives every cell of the whole image's feature grid to the one
tile in which that cell lies farthest from a tile border (ties: the earlier tile). Stitching
keeps those cells of each tile's grid and drops the rest, so the border effects of a tile
(padding, truncated neighbourhoods) never reach the output and no cell is an average of two.

Everything is computed from Python ints when the layout is built: splitting and stitching
are fixed slices and concatenations, which torch.onnx traces into a static graph.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from adlight.errors import ConfigError


def tile_starts(size: int, tile: int, overlap: int, stride: int = 1) -> list[int]:
    """Start offsets of the fewest tiles of ``tile`` px that cover ``size`` px with at least
    ``overlap`` px between neighbours: the first flush with the near border, the last with
    the far one (``size`` need not be a multiple of the step), the rest spread evenly
    between them on multiples of ``stride`` (so the overlaps come out alike, not one sliver)."""
    count = 1 if tile >= size else 1 + math.ceil((size - tile) / (tile - overlap))
    if count == 1:
        return [0]
    spacing = (size - tile) / (count - 1) / stride
    return [stride * math.floor(i * spacing + 0.5) for i in range(count)]


def cell_owners(starts: list[int], tile: int, size: int) -> list[tuple[int, int, int]]:
    """``(tile index, first cell, end cell)`` in the tile's own coordinates, in image order:
    cell ``j`` of the ``size``-cell grid goes to the tile (of ``tile`` cells, starting at the
    cells ``starts``) where ``min(j - start, start + tile - 1 - j)`` is largest."""
    owners = []
    for j in range(size):
        margins = [min(j - s, s + tile - 1 - j) if s <= j < s + tile else -1 for s in starts]
        owners.append(max(range(len(starts)), key=lambda i: (margins[i], -i)))
    segments: list[tuple[int, int, int]] = []
    for j, owner in enumerate(owners):
        if segments and segments[-1][0] == owner:
            index, first, _ = segments[-1]
            segments[-1] = (index, first, j - starts[owner] + 1)
        else:
            segments.append((owner, j - starts[owner], j - starts[owner] + 1))
    # equal tents shifted along the axis: the farthest-from-border tile only moves forward
    assert [s[0] for s in segments] == sorted({s[0] for s in segments}), segments
    return segments


@dataclass(frozen=True)
class TileLayout:
    """Tiles over a ``size`` x ``size`` image whose feature grid has one cell per ``stride`` px.

    ``size``, ``tile`` and ``overlap`` must be multiples of ``stride`` (a tile then starts on a
    cell), with ``0 <= overlap < tile <= size``.
    """

    size: int
    tile: int
    overlap: int
    stride: int
    starts: list[int] = field(init=False)
    segments: list[tuple[int, int, int]] = field(init=False)

    def __post_init__(self) -> None:
        for argument, value in (("input_size", self.size), ("tile_size", self.tile),
                                ("tile_overlap", self.overlap)):
            if value % self.stride:
                raise ConfigError(f"{argument}={value} is not a multiple of the feature grid's stride "
                                  f"({self.stride} px): tiles must start and end on grid cells")
        if self.tile > self.size:
            raise ConfigError(f"tile_size={self.tile} is larger than input_size={self.size}")
        if not 0 <= self.overlap < self.tile:
            raise ConfigError(f"tile_overlap must be >= 0 and smaller than tile_size={self.tile}, "
                              f"got {self.overlap}")
        starts = tile_starts(self.size, self.tile, self.overlap, self.stride)
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "segments", cell_owners(
            [s // self.stride for s in starts], self.tile // self.stride, self.size // self.stride))

    @property
    def count(self) -> int:
        """Tiles per image (rows x columns)."""
        return len(self.starts) ** 2

    def split(self, images: Tensor) -> list[Tensor]:
        """N x C x size x size -> the tiles, each N x C x tile x tile, row by row."""
        if tuple(images.shape[-2:]) != (self.size, self.size):
            raise ConfigError(f"tiling expects {self.size} x {self.size} images, got {tuple(images.shape[-2:])}")
        t = self.tile
        return [images[..., r:r + t, c:c + t] for r in self.starts for c in self.starts]

    def stitch(self, tile_grids: Sequence[Tensor]) -> Tensor:
        """The tiles' N x D x g x g grids (``split``'s order) -> N x D x G x G of the whole image."""
        side = len(self.starts)
        rows = []
        for r, r0, r1 in self.segments:
            rows.append(torch.cat([tile_grids[r * side + c][..., r0:r1, c0:c1] for c, c0, c1 in self.segments],
                                  dim=-1))
        return torch.cat(rows, dim=-2)
