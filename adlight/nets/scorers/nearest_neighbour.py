"""The nearest-neighbour scorer: a frozen representation and the training normals' features.

An image's score is the mean cosine distance from its (unit-length) representation to its k
nearest training normals (Bergman, Cohen & Hoshen, "Deep Nearest Neighbor Anomaly Detection",
2020): one matrix product and a top-k, both plain torch, so it traces to ONNX.
"""

from __future__ import annotations

from torch import Tensor, nn

from adlight.nets.scorers.base import Scorer


class NearestNeighbourScorer(Scorer):
    """Args:
        representation: images -> N x D unit-length features (frozen; shared with the
            LightningModule).
        bank: M x D features of the training normals.
        k: neighbours averaged (<= M).
    """

    def __init__(self, representation: nn.Module, bank: Tensor, k: int) -> None:
        super().__init__()
        self.representation = representation
        self.register_buffer("bank", bank)
        self.k = int(k)

    def distances(self, features: Tensor) -> Tensor:
        """N anomaly scores: the mean cosine distance to the k nearest bank rows."""
        cosine = features.float() @ self.bank.float().T
        nearest = cosine.topk(self.k, dim=1).values  # largest cosine = nearest
        return (1.0 - nearest).mean(dim=1)

    def forward(self, images: Tensor) -> tuple[Tensor]:
        return self.distances(self.representation(images).float()),
