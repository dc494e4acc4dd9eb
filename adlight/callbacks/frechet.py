"""The Frechet distance between training normals and generated images, during training.

torchmetrics' :class:`~torchmetrics.image.fid.FrechetInceptionDistance` under a pluggable
feature extractor, for any model with ``sample_latent(n, rng)``, ``generate(z)`` (images in
[0, 1]) and ``image_shape`` (such as :class:`~adlight.models.GANModel`). Measured once
before training and after every ``every_n_epochs``-th epoch, logged as
``train/frechet_distance``. Under DDP each process takes every world-th training image and
generates its share of the samples; the metric sums the shares over the processes.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchmetrics.image.fid import FrechetInceptionDistance

from adlight.checks import check_int
from adlight.models.training_normals import training_normals_dataset

#: the logged value's name
METRIC = "train/frechet_distance"


class FrechetDistance(Callback):
    """Logs the Frechet distance of the model's generator.

    Args:
        features: maps [0, 1] images (N x C x H x W, float) to N x D (e.g.
            ``adlight.nets.TransferFeatures`` on the offline EfficientNet-Lite0,
            ``layers: pre_logits, unit_length: false``). Configuration, not model state:
            it stays out of the model's checkpoint.
        every_n_epochs: measure after every n-th training epoch (and once before training).
        num_samples: generated images per measurement (``None``: as many as the training
            normals).
        seed: seeds the generated images' codes (the same codes every epoch, so the curve
            follows the generator, not the noise).

    ``history`` holds ``(epochs completed, distance)`` and is saved in the checkpoint.
    """

    def __init__(self, features: nn.Module, every_n_epochs: int = 1,
                 num_samples: int | None = None, seed: int = 0) -> None:
        self.features = features
        self.every_n_epochs = check_int("every_n_epochs", every_n_epochs)
        self.num_samples = None if num_samples is None else check_int("num_samples", num_samples)
        self.seed = int(seed)
        self.history: list[tuple[int, float]] = []
        self.metric: FrechetInceptionDistance | None = None
        self._num_real = 0

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if stage == "fit" and self.metric is None:
            self.metric = FrechetInceptionDistance(
                feature=self.features, normalize=True, reset_real_features=False,
                input_img_size=tuple(pl_module.image_shape))

    def measure(self, trainer: L.Trainer, pl_module, epoch: int) -> float:
        """The distance of the generator after ``epoch`` training epochs (appended to history)."""
        metric = self.metric.to(pl_module.device)
        rank, world = trainer.global_rank, trainer.world_size
        batch_size = getattr(trainer.datamodule, "batch_size", 32)
        if int(metric.real_features_num_samples) == 0:
            dataset = training_normals_dataset(trainer)
            # each process takes every world-th image; the metric sums the shares over processes
            shard = Subset(dataset, list(range(rank, len(dataset), world)))
            for batch in DataLoader(shard, batch_size=batch_size):
                metric.update(batch["image"].to(pl_module.device), real=True)
            self._num_real = len(dataset)
        total = self.num_samples or self._num_real
        codes = pl_module.sample_latent(len(range(rank, total, world)),
                                        torch.Generator().manual_seed(self.seed + 1 + rank))
        metric.reset()  # fake features only (reset_real_features=False)
        for chunk in codes.split(batch_size):
            metric.update(pl_module.generate(chunk), real=False)
        value = float(metric.compute())
        self.history.append((epoch, value))
        return value

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.current_epoch == 0 and trainer.global_step == 0:
            value = self.measure(trainer, pl_module, 0)  # the untrained generator
            # Lightning refuses self.log in on_train_start: straight to the loggers
            for logger in trainer.loggers:
                logger.log_metrics({METRIC: value}, step=0)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1  # epochs completed
        if epoch % self.every_n_epochs == 0:
            # every process computed the same value (the metric syncs), so no sync_dist
            pl_module.log(METRIC, self.measure(trainer, pl_module, epoch), sync_dist=False)

    def state_dict(self) -> dict:
        return {"history": [list(point) for point in self.history]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.history = [(int(e), float(v)) for e, v in state_dict.get("history", [])]
