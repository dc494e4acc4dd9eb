"""The DCGAN discriminator's scorer: ``-logit D(x)``, higher = less like the training normals."""

from __future__ import annotations

from torch import Tensor, nn

from adlight.nets.scorers.base import Scorer


class DiscriminatorScorer(Scorer):
    """Args:
        discriminator: image (in ``input_range``) -> logit (shared with the LightningModule).
        input_range: the networks' pixel range ([-1, 1] for DCGAN); images come in [0, 1].
    """

    def __init__(self, discriminator: nn.Module, input_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        self.discriminator = discriminator
        self.low, self.high = float(input_range[0]), float(input_range[1])

    def forward(self, images: Tensor) -> tuple[Tensor]:
        return -self.discriminator(images * (self.high - self.low) + self.low).float(),
