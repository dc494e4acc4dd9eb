"""Fitting one-class heads (KDE, OCSVM, ...) on the features of the training normals.

A model with ``has_head = True`` returns this callback from ``configure_callbacks``, so it
is always attached. The head is fitted before every validation epoch (so the thresholds
chosen on validation are those of the head that will score the test set) and at the end
of fitting when there is no validation split. Under DDP each process extracts the features
of its share of the training normals and all of them are gathered, so every process fits
the same head on the whole training set.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, DistributedSampler

from adlight.errors import ConfigError


def training_normals_dataset(trainer: L.Trainer):
    datamodule = trainer.datamodule
    if datamodule is None or not hasattr(datamodule, "train_eval_dataset"):
        raise ConfigError(
            "fitting a one-class head needs an adlight datamodule (with train_eval_dataset()); "
            f"got {type(datamodule).__name__}: pass datamodule= to fit"
        )
    return datamodule.train_eval_dataset()


@torch.no_grad()
def gather_training_features(trainer: L.Trainer, model) -> torch.Tensor:
    """Features of every training normal, gathered from all processes, in dataset order."""
    dataset = training_normals_dataset(trainer)
    sampler = None
    if trainer.world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=trainer.world_size,
                                     rank=trainer.global_rank, shuffle=False)
    loader = DataLoader(dataset, batch_size=trainer.datamodule.batch_size, sampler=sampler,
                        num_workers=getattr(trainer.datamodule, "num_workers", 0))
    was_training = model.training
    model.eval()
    features, indices = [], []
    for batch in loader:
        batch = trainer.strategy.batch_to_device(batch)
        # in the trainer's precision (autocast under "bf16-mixed"/"16-mixed"), as test_step
        # scores: the head is fitted on the features it will be asked to score
        with trainer.precision_plugin.test_step_context():
            features.append(model.head_features(batch).float())
        indices.append(batch["index"])
    model.train(was_training)
    features, indices = torch.cat(features), torch.cat(indices)
    if trainer.world_size > 1:
        features = model.all_gather(features).flatten(0, 1)
        indices = model.all_gather(indices).flatten(0, 1)
    # DistributedSampler pads with repeats: keep one copy of each sample, in index order
    order = torch.argsort(indices, stable=True)
    keep = torch.ones_like(order, dtype=torch.bool)
    keep[1:] = indices[order][1:] != indices[order][:-1]
    return features[order[keep]]


def _last_epoch(trainer: L.Trainer) -> bool:
    """Whether the epoch ending now is the last one fit will run (as far as can be known)."""
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    return (trainer.should_stop
            or (max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs)
            or (max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps))


class OneClassHeadFitter(Callback):
    """Fits ``model.fit_head`` on the features of all training normals."""

    def __init__(self) -> None:
        self._fitted_at_step: int | None = None

    def _fit(self, trainer: L.Trainer, model) -> None:
        model.fit_head(gather_training_features(trainer, model))
        self._fitted_at_step = trainer.global_step

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        self._fit(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        # ModelCheckpoint saves in its own on_train_epoch_end, which Lightning runs after this
        # callback's. When this last epoch ran no validation (no validation split), fit now,
        # so that the checkpoint holds the head (on_train_end would come after the save)
        if self._fitted_at_step != trainer.global_step and _last_epoch(trainer):
            self._fit(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        # the last validation epoch may have fitted the head on the final weights already;
        # otherwise (no validation split, or validation every n epochs) fit it now
        if self._fitted_at_step != trainer.global_step:
            self._fit(trainer, pl_module)
