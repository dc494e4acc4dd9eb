"""Autoencoder training losses, in image units ([0, 1] tensors).

Plain torch; the SSIM is torchmetrics' implementation, not a hand-written one.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from adlight.errors import ConfigError
from adlight.nets.precision import full_precision

LossName = Literal["l2", "l1_sparse", "ssim", "bce"]
LOSSES = ("l2", "l1_sparse", "ssim", "bce")


def check_loss_name(name: str) -> str:
    if name not in LOSSES:
        raise ConfigError(f"loss must be one of {LOSSES}, got {name!r}")
    return name


def ssim_map(reconstruction: Tensor, target: Tensor, kernel_size: int = 11) -> Tensor:
    """Per-pixel SSIM (N x C x H x W), computed in float32 (unstable in half precision)."""
    with full_precision(target):
        _, full = structural_similarity_index_measure(
            reconstruction.float(), target.float(), data_range=1.0, kernel_size=kernel_size,
            reduction="none", return_full_image=True,
        )
    return full


def reconstruction_error(name: str, reconstruction: Tensor, target: Tensor) -> Tensor:
    """Per-image reconstruction term (N), mean over pixels and channels.

    ``l1_sparse`` reconstructs with L2 (its sparsity term acts on the latent, see
    :func:`sparsity_penalty`).
    """
    if name in ("l2", "l1_sparse"):
        return (reconstruction - target).pow(2).flatten(1).mean(1)
    if name == "ssim":
        return (1.0 - ssim_map(reconstruction, target)).flatten(1).mean(1)
    if name == "bce":
        # in float32 and clamped: BCE is undefined at exactly 0 and 1 and unsafe in fp16
        with full_precision(target):
            recon = reconstruction.float().clamp(1e-6, 1 - 1e-6)
            return F.binary_cross_entropy(recon, target.float(), reduction="none").flatten(1).mean(1)
    raise ConfigError(f"loss must be one of {LOSSES}, got {name!r}")


def sparsity_penalty(latent: Tensor) -> Tensor:
    """||z||_1 per image (N): the L1 activity penalty of Zhao & Karray's sparse CAE.

    Summed over the latent and averaged over the batch, as Keras' ``l1`` activity
    regulariser (the paper's lambda = 0.002 / 4e-4 are in these units).
    """
    return latent.flatten(1).abs().sum(1)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(q(z|x) || N(0, I)) per image (N), summed over latent dimensions."""
    mu, logvar = mu.float().flatten(1), logvar.float().flatten(1)
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
