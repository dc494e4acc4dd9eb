"""A fixed-noise grid of generated images, written and logged every training epoch.

Works with any model that has ``sample_latent(n, rng)`` and ``generate(z)`` (images in
[0, 1]), such as :class:`~adlight.models.GANModel`. The grid before training (the untrained
generator) is ``samples/epoch_0000.png`` in the run directory; after epoch n it is
``epoch_NNNN.png``. Each is also sent to TensorBoard and to loggers with ``log_image`` (W&B).
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import make_grid, save_image

from adlight.callbacks.report import run_directory, unique_path
from adlight.checks import check_int


class SampleGrid(Callback):
    """Writes ``num_images`` samples from the same codes (drawn from ``seed``) each epoch.

    The codes are drawn again from the seed on every run, so a resumed run or another
    machine draws the same grid from the same weights.
    """

    def __init__(self, num_images: int = 64, seed: int = 0) -> None:
        self.num_images = check_int("num_images", num_images)
        self.seed = int(seed)
        self.paths: list[Path] = []

    def noise(self, pl_module) -> torch.Tensor:
        return pl_module.sample_latent(self.num_images, torch.Generator().manual_seed(self.seed))

    def write(self, trainer: L.Trainer, pl_module, epoch: int) -> None:
        """The grid of the generator after ``epoch`` training epochs."""
        directory = run_directory(trainer) / "samples"  # every rank: log_dir broadcasts
        if not trainer.is_global_zero:
            return
        images = pl_module.generate(self.noise(pl_module)).float().cpu()
        grid = make_grid(images, nrow=max(1, math.isqrt(images.shape[0])), padding=2)
        directory.mkdir(parents=True, exist_ok=True)
        path = unique_path(directory / f"epoch_{epoch:04d}.png")
        save_image(grid, path)
        self.paths.append(path)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, global_step=trainer.global_step)
            elif hasattr(logger, "log_image"):
                logger.log_image(key="samples", images=[str(path)], step=trainer.global_step)

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.current_epoch == 0 and trainer.global_step == 0:
            self.write(trainer, pl_module, 0)  # the untrained generator, for reference

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self.write(trainer, pl_module, trainer.current_epoch + 1)  # epochs completed
