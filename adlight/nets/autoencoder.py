"""Base class shared by every autoencoder in :mod:`adlight.nets`.

A concrete network builds ``self.encoder`` (image -> latent) and ``self.decoder``
(latent -> image in the network's own :attr:`Autoencoder.input_range`); this class adds
the contract from ``docs/contracts.md`` ("Networks"):

- ``encode(x)`` returns ``z``, or ``(mu, logvar)`` when ``variational=True``;
- ``decode(z)`` returns the reconstruction;
- ``forward(x)`` returns :class:`AutoencoderOutput`; a variational net samples
  ``z = mu + eps * std`` in training mode and uses ``z = mu`` in eval mode;
- ``check_input(x)`` raises :class:`~adlight.errors.ConfigError` when ``x`` does not have
  the channels and size the network was built for (the model layer calls it too).

When ``variational=True`` the encoder's last layer emits twice the latent (twice the
channels for spatial latents, twice the features for dense ones); the first half is
``mu`` and the second ``logvar``, clamped to :attr:`Autoencoder.logvar_range`.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from adlight.checks import is_int
from adlight.errors import ConfigError

__all__ = ["Autoencoder", "AutoencoderOutput"]


class AutoencoderOutput(NamedTuple):
    """What :meth:`Autoencoder.forward` returns.

    Attributes:
        reconstruction: ``N x C x H x W``, in the network's ``input_range``.
        latent: the code that was decoded, ``N x latent_shape`` (the sample ``z`` of a
            variational net in training mode, ``mu`` in eval mode).
        mu: mean of the approximate posterior, same shape as ``latent``; ``None`` unless
            the net is variational.
        logvar: its log-variance (clamped), same shape; ``None`` unless variational.
    """

    reconstruction: Tensor
    latent: Tensor
    mu: Tensor | None = None
    logvar: Tensor | None = None


def check_positive_int(value: object, name: str, owner: str) -> int:
    """Return ``value`` as an int, or raise ConfigError naming ``name`` if it is not >= 1."""
    if not is_int(value) or value < 1:
        raise ConfigError(f"{owner}: {name}={value!r} must be a positive integer")
    return int(value)


def check_image_size(image_size: object, multiple: int, owner: str, why: str) -> int:
    """Return ``image_size`` as an int, or raise ConfigError if it is not a positive
    multiple of ``multiple`` (``why`` says what in the architecture needs it)."""
    size = check_positive_int(image_size, "image_size", owner)
    if size % multiple:
        lower = max(multiple, size - size % multiple)
        raise ConfigError(
            f"{owner}: image_size={size} must be a multiple of {multiple} ({why}); "
            f"try image_size={lower} or {lower + multiple}"
        )
    return size


def check_widths(widths: object, length: int, owner: str, name: str = "widths") -> tuple[int, ...]:
    """Return ``widths`` as a tuple of ``length`` positive ints, or raise ConfigError."""
    try:
        values = tuple(widths)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError(
            f"{owner}: {name}={widths!r} must be a sequence of {length} ints"
        ) from None
    if len(values) != length:
        raise ConfigError(
            f"{owner}: {name}={list(values)!r} must have {length} entries, got {len(values)}"
        )
    return tuple(check_positive_int(v, name, owner) for v in values)


class Autoencoder(nn.Module):
    """Encoder/decoder pair with an optional Gaussian (VAE-style) latent.

    Subclasses call ``super().__init__(...)`` and then set ``self.encoder`` and
    ``self.decoder``. With ``variational=True`` the encoder must end in a layer with
    twice the latent channels/features and no squashing activation after it.

    Args:
        in_channels: channels of the input image (1 grayscale, 3 RGB).
        image_size: height = width of the input image.
        latent_shape: shape of one sample's latent code, without the batch dimension:
            ``(latent_dim,)`` for dense latents, ``(C, h, w)`` for spatial ones.
        variational: make the latent a Gaussian with learned ``mu`` and ``logvar``.
    """

    #: Value range of the images the network is trained on and reconstructs.
    input_range: ClassVar[tuple[float, float]] = (0.0, 1.0)
    #: logvar is clamped to this range: std in about [7e-3, 148].
    logvar_range: ClassVar[tuple[float, float]] = (-10.0, 10.0)

    encoder: nn.Module
    decoder: nn.Module

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        latent_shape: tuple[int, ...],
        variational: bool = False,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.in_channels = check_positive_int(in_channels, "in_channels", owner)
        self.image_size = check_positive_int(image_size, "image_size", owner)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.variational = bool(variational)

    # ------------------------------------------------------------------ checks
    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input image."""
        return (self.in_channels, self.image_size, self.image_size)

    def check_input(self, x: Tensor) -> None:
        """Raise ConfigError unless ``x`` is ``N x in_channels x image_size x image_size``."""
        expected = self.input_shape
        shape = tuple(x.shape)
        if len(shape) == 4 and shape[1:] == expected:
            return
        owner = type(self).__name__
        fixes = []
        if len(shape) == 4:
            if shape[1] != self.in_channels:
                fixes.append(f"in_channels={shape[1]}")
            if shape[2] != shape[3]:
                fixes.append("image_size (the net takes square images: resize or crop them)")
            elif shape[2] != self.image_size:
                fixes.append(f"image_size={shape[2]}")
            hint = f"; set {' and '.join(fixes)} on {owner} or change the data to match"
        else:
            hint = "; the net takes a batch of images N x C x H x W"
        raise ConfigError(
            f"{owner}: expected input of shape (N, {expected[0]}, {expected[1]}, {expected[2]})"
            f" (in_channels={self.in_channels}, image_size={self.image_size}), "
            f"got {shape}{hint}"
        )

    # ----------------------------------------------------------------- contract
    def encode(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Image -> ``z``, or ``(mu, logvar)`` when variational."""
        h = self.encoder(x)
        if not self.variational:
            return h
        mu, logvar = h.chunk(2, dim=1)
        return mu, logvar.clamp(*self.logvar_range)

    def decode(self, z: Tensor) -> Tensor:
        """Latent -> reconstruction in :attr:`input_range`."""
        return self.decoder(z)

    def reparameterize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """``mu + eps * exp(logvar / 2)`` in training mode, ``mu`` in eval mode."""
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: Tensor) -> AutoencoderOutput:
        self.check_input(x)
        if not self.variational:
            z = self.encode(x)
            return AutoencoderOutput(self.decode(z), z)
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return AutoencoderOutput(self.decode(z), z, mu, logvar)

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, image_size={self.image_size}, "
            f"latent_shape={self.latent_shape}, variational={self.variational}, "
            f"input_range={self.input_range}"
        )
