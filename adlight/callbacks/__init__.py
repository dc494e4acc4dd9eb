"""Callbacks: one-class head fitting, the test report, the prediction writer, GAN samples,
the Frechet distance and the generator's export."""

from adlight.callbacks.frechet import FrechetDistance
from adlight.callbacks.gan_samples import SampleGrid
from adlight.callbacks.generator_export import ExportGenerator
from adlight.callbacks.heads import OneClassHeadFitter
from adlight.callbacks.predictions import PredictionWriter
from adlight.callbacks.report import TestReport
from adlight.callbacks.resume import LastCheckpoint, RandomStateCheckpoint

__all__ = [
    "ExportGenerator",
    "FrechetDistance",
    "LastCheckpoint",
    "OneClassHeadFitter",
    "PredictionWriter",
    "RandomStateCheckpoint",
    "SampleGrid",
    "TestReport",
]
