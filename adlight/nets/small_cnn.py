"""Wilmet et al.'s small supervised CNN baseline (plain torch).

Five blocks of a 3x3 convolution with 16 filters (ReLU) and 2x2 max-pooling on a 200 x 200 x 3
image, then flatten, one hidden dense layer and a single output; the sigmoid of that output is
the anomaly probability (trained with binary cross-entropy and RMSprop in the paper; the
sigmoid lives in the loss and in the model's score, so this returns the logit).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.nets.autoencoder import check_positive_int


class SmallCNN(nn.Module):
    """Args:
        in_channels: 3 in the paper; 1 for grayscale data.
        image_size: input height and width (200 in the paper); other sizes are resized to it.
        filters: filters of every convolution (16).
        blocks: number of conv + pool blocks (5).
        hidden: units of the dense hidden layer.
        num_outputs: 1 (a sigmoid anomaly logit) or K class logits.
        dropout: dropout before the output layer.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 200,
        filters: int = 16,
        blocks: int = 5,
        hidden: int = 64,
        num_outputs: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("image_size", image_size),
                            ("filters", filters), ("blocks", blocks), ("hidden", hidden),
                            ("num_outputs", num_outputs)):
            check_positive_int(value, name, "SmallCNN")
        if image_size < 2**blocks:
            raise ConfigError(
                f"image_size {image_size} is too small for {blocks} max-pooling blocks "
                f"(needs at least {2**blocks})"
            )
        self.in_channels = in_channels
        self.image_size = image_size
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(blocks):
            # pool, then ReLU: the same values and gradients as the paper's ReLU-then-pool
            # (ReLU is monotonic, so it commutes with max), with the ReLU on a quarter of the
            # pixels; on a CPU the two elementwise passes over each block's full-size
            # activations were a third of a training step (keeps the checkpoints' indices)
            layers += [nn.Conv2d(channels, filters, 3, padding=1), nn.MaxPool2d(2),
                       nn.ReLU(inplace=True)]
            channels = filters
        self.features = nn.Sequential(*layers)
        side = image_size // 2**blocks
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(filters * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )

    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ConfigError(f"SmallCNN expects N x 1|3 x H x W images, got {tuple(images.shape)}")
        if images.shape[1] != self.in_channels:
            if self.in_channels == 3:
                images = images.expand(-1, 3, -1, -1)
            else:
                images = images.mean(dim=1, keepdim=True)
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size, self.image_size),
                                   mode="bilinear", align_corners=False)
        return self.classifier(self.features(images))
