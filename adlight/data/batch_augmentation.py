"""The train-only augmentations applied to a whole batch at once, each image drawn on its own.

:func:`adlight.data.transforms.augmentation_transform` does the same per image with
torchvision v2 (one rotation, flip and noise call per item, in the loader). Here one
``affine_grid``/``grid_sample`` rotates and flips every image of a batch by its own random
angle and flips, so the work is a few batched tensor operations that run wherever the batch
is (the GPU when there is one: the datamodule calls this after the batch moved there).

The distribution is torchvision's: an angle uniform in ``[-d, d]`` (counter-clockwise for a
positive angle, about the image centre, bilinear, uncovered corners 0 blended like
torchvision's ``fill=0``), horizontal and vertical flips each with probability 0.5, then
Gaussian noise on the image only, clipped to [0, 1]. Masks go through the same grid with
nearest-neighbour sampling, so they move with the image and stay 0/1. The random draws come
from torch's global generators (the angles and flips from the CPU one, the noise from the
batch's device), so ``seed_everything`` makes a run repeatable, as with the per-image path.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from adlight.data.transforms import check_augmentation


class BatchAugmentation:
    """Rotation, flips and noise drawn per image over ``N x C x H x W`` batches.

    Args: as :func:`adlight.data.transforms.augmentation_transform` (and checked the same way).
    """

    def __init__(self, rotation_degrees: float = 0.0, hflip: bool = False, vflip: bool = False,
                 noise_std: float = 0.0) -> None:
        check_augmentation(rotation_degrees, noise_std)
        self.rotation_degrees = float(rotation_degrees)
        self.hflip = bool(hflip)
        self.vflip = bool(vflip)
        self.noise_std = float(noise_std)

    @property
    def active(self) -> bool:
        return self.rotation_degrees > 0 or self.hflip or self.vflip or self.noise_std > 0

    def draw(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(angles, hflips, vflips)`` of ``n`` images: degrees uniform in ``[-d, d]`` (zeros
        when rotation is off) and two bool vectors, each true with probability 0.5 when on."""
        angles = (torch.empty(n).uniform_(-self.rotation_degrees, self.rotation_degrees)
                  if self.rotation_degrees > 0 else torch.zeros(n))
        hflips = torch.rand(n) < 0.5 if self.hflip else torch.zeros(n, dtype=torch.bool)
        vflips = torch.rand(n) < 0.5 if self.vflip else torch.zeros(n, dtype=torch.bool)
        return angles, hflips, vflips

    def __call__(self, image: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``(image, mask)`` augmented; ``image`` float ``N x C x H x W`` in [0, 1] (uint8 is
        scaled to it first), ``mask`` ``N x 1 x H x W`` 0/1 or ``None``. Inputs are not changed."""
        if image.dtype == torch.uint8:
            image = image.float().div_(255.0)
        angles, hflips, vflips = self.draw(image.shape[0])
        if self.rotation_degrees > 0:
            image, mask = rotate_and_flip(image, mask, angles, hflips, vflips)
        elif self.hflip or self.vflip:
            image = flip(image, hflips, vflips)
            mask = None if mask is None else flip(mask, hflips, vflips)
        if self.noise_std > 0:
            # out of place: never writes into the loader's tensors
            image = (image + torch.randn_like(image) * self.noise_std).clamp_(0.0, 1.0)
        return image, mask


def rotate_and_flip(image: Tensor, mask: Tensor | None, angles: Tensor, hflips: Tensor,
                    vflips: Tensor) -> tuple[Tensor, Tensor | None]:
    """Each image rotated by its angle (degrees, counter-clockwise), then flipped where its
    flags say, through one sampling grid for the whole batch; masks with nearest sampling."""
    n, c, h, w = image.shape
    theta = rotation_theta(angles, h, w)
    # a flip after the rotation mirrors the output coordinates: out(x, y) = rot(-x, y)
    theta[:, :, 0] *= torch.where(hflips, -1.0, 1.0)[:, None]
    theta[:, :, 1] *= torch.where(vflips, -1.0, 1.0)[:, None]
    theta = theta.to(device=image.device, dtype=image.dtype)
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    # torchvision's fill: a ones plane sampled with the image says how much of each output
    # pixel the image covers; the rest is the fill (0), i.e. the image times that coverage
    planes = torch.cat([image, image.new_ones(n, 1, h, w)], dim=1)
    sampled = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False)
    image = (sampled[:, :c] * sampled[:, c:]).clamp_(0.0, 1.0)
    if mask is not None:
        mask = F.grid_sample(mask.to(image.dtype), grid, mode="nearest", padding_mode="zeros",
                             align_corners=False).to(mask.dtype)
    return image, mask


def rotation_theta(angles: Tensor, height: int, width: int) -> Tensor:
    """``N x 2 x 3`` ``affine_grid`` matrices rotating each image by ``angles`` degrees
    counter-clockwise about its centre, as ``torchvision``'s ``rotate`` (``expand=False``).

    The rotation acts on pixel coordinates; ``affine_grid`` works in coordinates normalised by
    half the width and half the height, so a non-square image's off-diagonal terms are scaled
    by its aspect.
    """
    radians = angles.double() * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    # output pixel -> input pixel, torchvision's inverse affine matrix for rotate(angle)
    theta = torch.zeros(len(angles), 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * (height / width)
    theta[:, 1, 0] = sin * (width / height)
    theta[:, 1, 1] = cos
    return theta.float()


def flip(batch: Tensor, hflips: Tensor, vflips: Tensor) -> Tensor:
    """``batch`` with the images where ``hflips``/``vflips`` mirrored left-right/up-down."""
    hflips, vflips = hflips.to(batch.device), vflips.to(batch.device)
    if hflips.any():
        batch = torch.where(hflips[:, None, None, None], batch.flip(-1), batch)
    if vflips.any():
        batch = torch.where(vflips[:, None, None, None], batch.flip(-2), batch)
    return batch
