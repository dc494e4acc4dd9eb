"""Writes the GAN's generator to ``<run>/generator.pt2`` when fitting (or a test alone) ends.

The file (a ``torch.export`` program, see :mod:`adlight.models.gan_export`) is what
``adlight.data.WithGeneratedNormals`` takes as ``generator_file``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from adlight.callbacks.report import run_directory
from adlight.models.gan_export import export_generator


class ExportGenerator(Callback):
    """Export the model's sampling generator to ``filename`` in the run directory.

    At the end of ``fit``; and at the end of ``test`` when nothing was exported before, so
    ``adlight test --ckpt_path X`` exports the generator of a checkpoint trained earlier.
    """

    def __init__(self, filename: str = "generator.pt2") -> None:
        self.filename = filename
        self.path: Path | None = None  # where rank 0 wrote it
        self.exported = False

    def export(self, trainer: L.Trainer, pl_module) -> None:
        path = run_directory(trainer) / self.filename  # every rank: log_dir broadcasts
        if trainer.is_global_zero:
            self.path = export_generator(pl_module, path)
        self.exported = True

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self.export(trainer, pl_module)

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        if not self.exported:
            self.export(trainer, pl_module)
