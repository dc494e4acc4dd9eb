"""Callbacks: one-class head fitting, the test report, the prediction writer."""

from adlight.callbacks.heads import OneClassHeadFitter
from adlight.callbacks.predictions import PredictionWriter
from adlight.callbacks.report import TestReport
from adlight.callbacks.resume import LastCheckpoint, RandomStateCheckpoint

__all__ = [
    "LastCheckpoint",
    "OneClassHeadFitter",
    "PredictionWriter",
    "RandomStateCheckpoint",
    "TestReport",
]
