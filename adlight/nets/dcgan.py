"""DCGAN generator and discriminator (Radford et al., 2016), plain torch.

The architecture follows the guidelines the DCGAN paper lists (section 3):

- no pooling: the discriminator downsamples with strided convolutions, the generator
  upsamples with fractionally-strided (transposed) convolutions;
- BatchNorm in both networks, except the generator's output layer and the
  discriminator's input layer;
- no hidden fully-connected layers: the generator's first layer is a transposed
  convolution that projects ``z`` (a ``latent_dim x 1 x 1`` map) to ``4 x 4``, the
  discriminator's last a ``4 x 4`` convolution to one logit;
- ReLU in the generator with a tanh output, LeakyReLU (slope 0.2) in the discriminator;
- weights drawn from N(0, 0.02) (BatchNorm scales from N(1, 0.02)).

Every hidden layer doubles (discriminator) or halves (generator) the side with a 4x4
kernel, stride 2 and padding 1, so ``image_size`` is ``4 * 2**k`` (32, 64, 128, 256...);
the widths double towards the ``4 x 4`` end, from ``width`` at full resolution, capped at
``max_width``. Images are in [-1, 1] (:attr:`input_range`): the model layer rescales.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from adlight.checks import is_int
from adlight.errors import ConfigError
from adlight.nets.autoencoder import check_positive_int

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "dcgan_init", "dcgan_widths"]


def dcgan_widths(image_size: object, width: object, max_width: object, owner: str) -> list[int]:
    """Channels of the hidden layers from full resolution (``image_size / 2``) down to 4 x 4.

    ``image_size`` must be ``4 * 2**k`` with ``k >= 1``; raises :class:`ConfigError` naming
    the argument otherwise.
    """
    size = check_positive_int(image_size, "image_size", owner)
    width = check_positive_int(width, "width", owner)
    cap = None if max_width is None else check_positive_int(max_width, "max_width", owner)
    if size < 8 or size & (size - 1):
        lower = max(8, 1 << (size.bit_length() - 1))
        hint = f"try image_size={lower} or {lower * 2}" if lower != size else "try image_size=8"
        raise ConfigError(
            f"{owner}: image_size={size} must be a power of two >= 8 (each layer halves or "
            f"doubles the side down to 4 x 4); {hint}"
        )
    layers = (size // 4).bit_length() - 1  # sides size/2, size/4, ..., 4
    return [min(width * 2**i, cap) if cap else width * 2**i for i in range(layers)]


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: conv weights N(0, 0.02), BatchNorm N(1, 0.02), 0 bias."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """``z`` (N x latent_dim) -> image (N x channels x image_size x image_size) in [-1, 1].

    Layers for ``image_size=64, width=64`` (the DCGAN paper's LSUN generator, 4x narrower):
    ``z -> 512 x 4 x 4 -> 256 x 8 x 8 -> 128 x 16 x 16 -> 64 x 32 x 32 -> 3 x 64 x 64``;
    each hidden layer is ConvTranspose(4, stride 2) + BatchNorm + ReLU, the first projects
    from 1 x 1 with a 4x4 kernel and stride 1, the last has no BatchNorm and a tanh.

    Args:
        latent_dim: size of ``z`` (the paper: 100), drawn from N(0, I) by :meth:`sample_latent`.
        image_size: side of the square output, a power of two >= 8 (64 and 128 in the papers).
        channels: output channels (1 grayscale, 3 RGB).
        width: channels of the last hidden layer (at ``image_size / 2``); each layer
            towards ``z`` doubles it.
        max_width: cap on any layer's channels (``None``: no cap), for large images.
    """

    input_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    def __init__(
        self,
        latent_dim: int = 100,
        image_size: int = 64,
        channels: int = 3,
        width: int = 64,
        max_width: int | None = None,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.latent_dim = check_positive_int(latent_dim, "latent_dim", owner)
        if not is_int(channels) or channels not in (1, 3):
            raise ConfigError(f"{owner}: channels={channels!r} must be 1 or 3")
        self.channels = int(channels)
        widths = dcgan_widths(image_size, width, max_width, owner)[::-1]  # from 4 x 4 up
        self.image_size = int(image_size)
        self.width, self.max_width = int(width), max_width
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(self.latent_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for w_in, w_out in pairwise(widths):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(w_out), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(widths[-1], self.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def init_args(self) -> dict[str, Any]:
        """The constructor arguments: what a checkpoint stores to rebuild this generator."""
        return {"latent_dim": self.latent_dim, "image_size": self.image_size,
                "channels": self.channels, "width": self.width, "max_width": self.max_width}

    def sample_latent(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """``n`` codes from N(0, I); ``generator`` makes them reproducible."""
        z = torch.randn(n, self.latent_dim, generator=generator)
        return z.to(device) if device is not None else z

    def forward(self, z: Tensor) -> Tensor:
        if z.ndim == 2:
            z = z[:, :, None, None]
        if z.ndim != 4 or z.shape[1:] != (self.latent_dim, 1, 1):
            raise ConfigError(
                f"{type(self).__name__}: expected z of shape (N, {self.latent_dim}), "
                f"got {tuple(z.shape)}"
            )
        return self.net(z)


class DCGANDiscriminator(nn.Module):
    """Image in [-1, 1] -> one logit per image (higher = more like the training images).

    Layers for ``image_size=64, width=64``:
    ``3 x 64 x 64 -> 64 x 32 x 32 -> 128 x 16 x 16 -> 256 x 8 x 8 -> 512 x 4 x 4 -> 1``;
    each hidden layer is Conv(4, stride 2) + BatchNorm + LeakyReLU(0.2) (no BatchNorm on
    the first), the last a 4x4 convolution without padding to one logit.

    :meth:`features` returns the last hidden map (``widths[-1] x 4 x 4``), the
    intermediate representation AnoGAN's discriminator loss compares.

    Args:
        image_size: side of the square input, a power of two >= 8.
        channels: input channels (1 or 3).
        width: channels of the first layer; each layer doubles it.
        max_width: cap on any layer's channels (``None``: no cap).
        negative_slope: LeakyReLU slope (the paper: 0.2).
    """

    input_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        width: int = 64,
        max_width: int | None = None,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if not is_int(channels) or channels not in (1, 3):
            raise ConfigError(f"{owner}: channels={channels!r} must be 1 or 3")
        widths = dcgan_widths(image_size, width, max_width, owner)
        self.image_size, self.channels = int(image_size), int(channels)
        layers: list[nn.Module] = [nn.Conv2d(self.channels, widths[0], 4, 2, 1, bias=False),
                                   nn.LeakyReLU(negative_slope, inplace=True)]
        for w_in, w_out in pairwise(widths):
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out),
                       nn.LeakyReLU(negative_slope, inplace=True)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)
        dcgan_init(self)

    def check_input(self, x: Tensor) -> None:
        expected = (self.channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ConfigError(
                f"{type(self).__name__}: expected images of shape (N, {expected[0]}, "
                f"{expected[1]}, {expected[2]}), got {tuple(x.shape)}; set image_size and "
                "channels on the generator and discriminator to match the data"
            )

    def features(self, x: Tensor) -> Tensor:
        """The last hidden feature map (N x C x 4 x 4)."""
        self.check_input(x)
        return self.body(x)

    def forward_with_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(logits N, features N x C x 4 x 4)`` in one pass."""
        features = self.features(x)
        return self.head(features).flatten(), features

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_features(x)[0]
