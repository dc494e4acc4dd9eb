"""The supervised classifiers' scorer: the probability of the anomalous class.

With ``target: label`` one logit is a sigmoid probability, two a softmax; with ``target:
normal_subclass`` (a network trained on the normal class's sub-categories) the score is
1 - the largest class probability (the maximum-softmax-probability baseline).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.nets.scorers.base import Scorer


def checked_logits(network: nn.Module, images: Tensor) -> Tensor:
    """The network's N x K logits; ConfigError naming the shape when it returns something else."""
    out = network(images)
    if out.ndim != 2:
        raise ConfigError(f"the network must return N x K logits, got shape {tuple(out.shape)}")
    return out


class ClassifierScorer(Scorer):
    """Args:
        network: images ([0, 1]) -> N x K logits (shared with the LightningModule).
        target: ``label`` or ``normal_subclass``.
    """

    def __init__(self, network: nn.Module, target: str = "label") -> None:
        super().__init__()
        self.network = network
        self.target = target

    def probability(self, logits: Tensor) -> Tensor:
        """N anomaly scores from N x K logits."""
        logits = logits.float()
        if self.target == "normal_subclass":
            return 1.0 - logits.softmax(dim=1).amax(dim=1)
        if logits.shape[1] == 1:
            return torch.sigmoid(logits[:, 0])
        if logits.shape[1] != 2:
            raise ConfigError(
                f"target: label needs 1 or 2 outputs, the network has {logits.shape[1]}: "
                "set num_classes: 2 (or num_outputs: 1)"
            )
        return logits.softmax(dim=1)[:, 1]

    def forward(self, images: Tensor) -> tuple[Tensor]:
        return self.probability(checked_logits(self.network, images)),
