"""Callbacks: the test report, the prediction writer, resuming, a run's cost, and for the GAN its sample
grids, the Frechet distance and the generator's export."""

from adlight.callbacks.frechet import FrechetDistance
from adlight.callbacks.freed_memory import KeepFreedMemory
from adlight.callbacks.gan_samples import SampleGrid
from adlight.callbacks.generator_export import ExportGenerator
from adlight.callbacks.memory_format import ChannelsLast
from adlight.callbacks.predictions import PredictionWriter
from adlight.callbacks.progress import RunProgress
from adlight.callbacks.report import TestReport
from adlight.callbacks.resume import LastCheckpoint, RandomStateCheckpoint
from adlight.callbacks.run_cost import RunCost

__all__ = [
    "ChannelsLast",
    "ExportGenerator",
    "FrechetDistance",
    "KeepFreedMemory",
    "LastCheckpoint",
    "PredictionWriter",
    "RandomStateCheckpoint",
    "RunCost",
    "RunProgress",
    "SampleGrid",
    "TestReport",
]
