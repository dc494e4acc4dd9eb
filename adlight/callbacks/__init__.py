"""Callbacks: the test report, the prediction writer, resuming."""

from adlight.callbacks.predictions import PredictionWriter
from adlight.callbacks.report import TestReport
from adlight.callbacks.resume import LastCheckpoint, RandomStateCheckpoint

__all__ = [
    "LastCheckpoint",
    "PredictionWriter",
    "RandomStateCheckpoint",
    "TestReport",
]
