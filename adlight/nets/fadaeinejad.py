"""Convolutional autoencoder of Fadaeinejad, "Anomaly Detection in Images using Deep
Encoder-Decoder Models" (Tables 1-2), itself in the style of the MVTec conv AE of
Bergmann et al. ("Improving Unsupervised Defect Segmentation by Applying Structural
Similarity to Autoencoders")."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from adlight.nets.autoencoder import (
    Autoencoder,
    check_image_size,
    check_positive_int,
    check_widths,
)

__all__ = ["FadaeinejadAE"]

# (kernel, stride, padding) of the eight hidden encoder convs; the decoder mirrors them.
_LAYOUT = ((4, 2, 1), (4, 2, 1), (3, 1, 1), (4, 2, 1), (3, 1, 1), (4, 2, 1), (3, 1, 1), (3, 1, 1))
BN_EPS = 1e-6
BN_MOMENTUM = 0.1
LEAKY_SLOPE = 0.01


def _block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [
        conv,
        nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM),
        nn.LeakyReLU(LEAKY_SLOPE),
    ]


class FadaeinejadAE(Autoencoder):
    """Strided conv autoencoder with a dense ``latent_dim`` bottleneck (L2 CAE of the paper).

    Layer table for the defaults (``in_channels=3, image_size=128, latent_dim=500``;
    ``s = image_size``, ``g = s / 16``); every hidden conv is followed by
    ``BatchNorm2d(eps=1e-6, momentum=0.1)`` and ``LeakyReLU(0.01)``:

    ========  ==================  ======  ======  =================
    layer     kernel / stride     pad     out ch  output size
    ========  ==================  ======  ======  =================
    conv1     4x4 / 2             1       32      s/2  (64)
    conv2     4x4 / 2             1       32      s/4  (32)
    conv3     3x3 / 1             1       32      s/4  (32)
    conv4     4x4 / 2             1       64      s/8  (16)
    conv5     3x3 / 1             1       64      s/8  (16)
    conv6     4x4 / 2             1       128     s/16 (8)
    conv7     3x3 / 1             1       64      s/16 (8)
    conv8     3x3 / 1             1       32      s/16 (8)
    latent    g x g / 1 (linear)  0       500     1 -> flattened to 500
    --------  ------------------  ------  ------  -----------------
    deconv1   g x g / 1           0       32      s/16 (8)
    deconv2   3x3 / 1             1       64      s/16 (8)
    deconv3   3x3 / 1             1       128     s/16 (8)
    deconv4   4x4 / 2             1       64      s/8  (16)
    deconv5   3x3 / 1             1       64      s/8  (16)
    deconv6   4x4 / 2             1       32      s/4  (32)
    deconv7   3x3 / 1             1       32      s/4  (32)
    deconv8   4x4 / 2             1       32      s/2  (64)
    output    4x4 / 2, sigmoid    1       C       s    (128)
    ========  ==================  ======  ======  =================

    The decoder uses transposed convs throughout; the latent layer has no
    normalisation or activation. The latent is a ``latent_dim`` vector per image.

    Args:
        in_channels: image channels.
        image_size: square input size; any multiple of 16 (64, 128, 256, ...).
        latent_dim: size of the bottleneck vector (the paper: 500).
        widths: output channels of the eight hidden encoder convs, conv1..conv8; the
            decoder uses them in reverse.
        variational: Gaussian latent (the latent conv emits ``2 * latent_dim``).
    """

    input_range = (0.0, 1.0)

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 128,
        latent_dim: int = 500,
        widths: Sequence[int] = (32, 32, 32, 64, 64, 128, 64, 32),
        variational: bool = False,
    ) -> None:
        owner = type(self).__name__
        image_size = check_image_size(image_size, 16, owner, "it is halved four times")
        widths = check_widths(widths, len(_LAYOUT), owner)
        latent_dim = check_positive_int(latent_dim, "latent_dim", owner)
        super().__init__(in_channels, image_size, (latent_dim,), variational)
        self.latent_dim = latent_dim
        grid = image_size // 16

        encoder: list[nn.Module] = []
        prev = self.in_channels
        for (k, s, p), w in zip(_LAYOUT, widths, strict=True):
            encoder += _block(nn.Conv2d(prev, w, k, s, p, bias=False), w)
            prev = w
        out = 2 * self.latent_dim if self.variational else self.latent_dim
        encoder += [nn.Conv2d(prev, out, grid), nn.Flatten(1)]
        self.encoder = nn.Sequential(*encoder)

        # Mirror: deconv i undoes conv (9 - i): it maps widths[8-i] -> widths[7-i].
        decoder: list[nn.Module] = [
            nn.Unflatten(1, (self.latent_dim, 1, 1)),
            *_block(nn.ConvTranspose2d(self.latent_dim, widths[-1], grid, bias=False), widths[-1]),
        ]
        prev = widths[-1]
        targets = list(reversed(widths[:-1]))  # 64, 128, 64, 64, 32, 32, 32
        layouts = list(reversed(_LAYOUT[1:]))  # conv8 .. conv2
        for (k, s, p), w in zip(layouts, targets, strict=True):
            decoder += _block(nn.ConvTranspose2d(prev, w, k, s, p, bias=False), w)
            prev = w
        k, s, p = _LAYOUT[0]
        decoder += [nn.ConvTranspose2d(prev, self.in_channels, k, s, p), nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)
