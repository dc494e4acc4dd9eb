"""Convolutional autoencoder of Zhao & Karray, "Anomaly Detection for Images using
Auto-Encoder based Sparse Representation": the CAE whose sigmoid latent is made sparse
by a lambda * L1 penalty (the penalty lives in the model, not here)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from adlight.nets.autoencoder import (
    Autoencoder,
    check_image_size,
    check_positive_int,
    check_widths,
)

__all__ = ["ZhaoKarrayAE"]

LEAKY_SLOPE = 0.2


class ZhaoKarrayAE(Autoencoder):
    """Four strided 4x4 conv blocks each way around a dense sigmoid latent; tanh output.

    Layer table for the defaults (``in_channels=3, image_size=128, latent_dim=300``,
    ``widths=(32, 64, 128, 256)``; ``s = image_size``, ``g = s / 16``). All convs are
    4x4, stride 2, padding 1; BatchNorm sits on the hidden blocks only, not on the
    input conv, the dense layers or the output conv:

    =========  ======================================  ==================
    layer      op                                      output
    =========  ======================================  ==================
    conv1      conv 4x4/2, LeakyReLU(0.2)              32 x s/2  (64)
    conv2      conv 4x4/2, BN, LeakyReLU(0.2)          64 x s/4  (32)
    conv3      conv 4x4/2, BN, LeakyReLU(0.2)          128 x s/8 (16)
    conv4      conv 4x4/2, BN, LeakyReLU(0.2)          256 x g   (8)
    latent     flatten, dense, sigmoid                 300
    ---------  --------------------------------------  ------------------
    dense      dense, LeakyReLU(0.2), reshape          256 x g   (8)
    deconv1    convT 4x4/2, BN, LeakyReLU(0.2)         128 x s/8 (16)
    deconv2    convT 4x4/2, BN, LeakyReLU(0.2)         64 x s/4  (32)
    deconv3    convT 4x4/2, BN, LeakyReLU(0.2)         32 x s/2  (64)
    output     convT 4x4/2, tanh                       C x s     (128)
    =========  ======================================  ==================

    Images are expected in ``input_range = (-1, 1)``; the model layer rescales the
    [0, 1] batch.

    Args:
        in_channels: image channels.
        image_size: square input size; a multiple of 16.
        latent_dim: size of the (sparse) latent vector; the paper uses 300.
        widths: channels of conv1..conv4; the decoder uses them in reverse.
        variational: Gaussian latent; the dense layer emits ``2 * latent_dim`` and the
            sigmoid is dropped (``mu`` and ``logvar`` are unbounded).
    """

    input_range = (-1.0, 1.0)

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 128,
        latent_dim: int = 300,
        widths: Sequence[int] = (32, 64, 128, 256),
        variational: bool = False,
    ) -> None:
        owner = type(self).__name__
        image_size = check_image_size(image_size, 16, owner, "it is halved four times")
        widths = check_widths(widths, 4, owner)
        latent_dim = check_positive_int(latent_dim, "latent_dim", owner)
        super().__init__(in_channels, image_size, (latent_dim,), variational)
        self.latent_dim = latent_dim
        grid = image_size // 16
        flat = widths[-1] * grid * grid

        encoder: list[nn.Module] = []
        prev = self.in_channels
        for i, w in enumerate(widths):
            encoder.append(nn.Conv2d(prev, w, 4, 2, 1, bias=i == 0))
            if i > 0:
                encoder.append(nn.BatchNorm2d(w))
            encoder.append(nn.LeakyReLU(LEAKY_SLOPE))
            prev = w
        encoder += [nn.Flatten(1)]
        if self.variational:
            encoder.append(nn.Linear(flat, 2 * latent_dim))
        else:
            encoder += [nn.Linear(flat, latent_dim), nn.Sigmoid()]
        self.encoder = nn.Sequential(*encoder)

        decoder: list[nn.Module] = [
            nn.Linear(latent_dim, flat),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Unflatten(1, (widths[-1], grid, grid)),
        ]
        prev = widths[-1]
        for w in reversed(widths[:-1]):
            decoder += [
                nn.ConvTranspose2d(prev, w, 4, 2, 1, bias=False),
                nn.BatchNorm2d(w),
                nn.LeakyReLU(LEAKY_SLOPE),
            ]
            prev = w
        decoder += [nn.ConvTranspose2d(prev, self.in_channels, 4, 2, 1), nn.Tanh()]
        self.decoder = nn.Sequential(*decoder)
