"""Andrews et al.'s scorer: a frozen representation and linear one-class SVMs in primal form.

Each SVM of the model's nu sweep is a weight vector and an offset (float64 buffers); the
score of the SVM of ``nu`` is ``-(w . f + b)``, higher = more anomalous.
"""

from __future__ import annotations

from torch import Tensor, nn

from adlight.nets.scorers.base import Scorer


class LinearOneClassSVMScorer(Scorer):
    """Args:
        representation: images -> N x D features (frozen; shared with the LightningModule).
        weights: K x D primal weights; offsets: K, one SVM per nu.
        column: the SVM whose score is ``forward``'s.
    """

    def __init__(self, representation: nn.Module, weights: Tensor, offsets: Tensor, column: int) -> None:
        super().__init__()
        self.representation = representation
        self.register_buffer("weights", weights)
        self.register_buffer("offsets", offsets)
        self.column = int(column)

    def decision_scores(self, features: Tensor) -> Tensor:
        """N x K anomaly scores (negated decision functions, float64), one column per SVM."""
        return -(features.double() @ self.weights.T + self.offsets)

    def forward(self, images: Tensor) -> tuple[Tensor]:
        features = self.representation(images).float()
        return self.decision_scores(features)[:, self.column].float(),
