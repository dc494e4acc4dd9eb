"""LightningModules: one per method family, built on :class:`AnomalyModule`."""

from adlight.models.autoencoder import AutoencoderModel
from adlight.models.base import AnomalyModule

__all__ = ["AnomalyModule", "AutoencoderModel"]
