"""Scorers: each family's whole inference path as one plain-torch module.

A scorer's ``forward`` takes ``[0, 1]`` float images (N x C x H x W) and returns the tuple its
``outputs`` names: ``(score,)`` or ``(score, anomaly_map)`` (score N float32, higher = more
anomalous; anomaly_map N x 1 x H x W float32 at the input's resolution). Fitted heads are
buffers of the scorer or of the modules it holds. The LightningModules score through it
(``model.scorer()``), and ``adlight/export`` traces it, knowing no family.
"""

from adlight.nets.scorers.base import LOCALISING, SCORE_ONLY, Scorer, describe_network

__all__ = ["LOCALISING", "SCORE_ONLY", "Scorer", "describe_network"]
