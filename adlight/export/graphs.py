"""Scoring graphs: a fitted model's scorer as one plain-torch module from 8-bit images to scores.

:func:`scoring_graph` wraps ``model.scorer()`` (the family's plain-torch inference path,
``adlight/nets/scorers``) in a :class:`ScoringGraph`: ``uint8 N x C x H x W`` in, the
scorer's outputs (``score`` N and, where the family localises, ``anomaly_map`` N x 1 x H x W)
out. It knows no family: a model that cannot be exported says why from its ``scorer()``.
"""

from __future__ import annotations

import math

from torch import Tensor, nn


class ScoringGraph(nn.Module):
    """uint8 images -> ``(score,)`` or ``(score, anomaly_map)``; scaling to [0, 1] inside."""

    def __init__(self, scorer: nn.Module, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.scorer = scorer
        self.outputs = outputs

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        # the datamodules hand models 8-bit pixels / 255 (adlight/data/datasets.py)
        return tuple(self.scorer(images.float() / 255.0))


def scoring_graph(model, bank_chunk: int = 4096) -> ScoringGraph:
    """The model's scorer (in eval mode, on the CPU) as a :class:`ScoringGraph`.

    ``bank_chunk``: rows of a memory bank compared at once, for every module of the scorer
    that searches one (it has a ``bank_chunk`` attribute); the memory of such a search is
    queries x bank_chunk floats. Raises :class:`~adlight.errors.ConfigError` naming why a
    model cannot export (the model's ``scorer()`` raises it).
    """
    model = model.to("cpu").eval().requires_grad_(False)  # float64 buffers (thresholds, heads) stay
    scorer = model.scorer()
    for module in scorer.modules():
        if hasattr(module, "bank_chunk"):
            module.bank_chunk = int(bank_chunk)
    return ScoringGraph(scorer, tuple(scorer.outputs))


def threshold_entry(model, level: str) -> dict:
    """``{"value", "source"}`` of the model's image or pixel threshold, as its test report says:
    a threshold chosen on other weights than the exported ones is not exported (the source says why)."""
    value, source = model.usable_threshold(level)
    if math.isnan(value):
        return {"value": None, "source": source}
    return {"value": value, "source": source}
