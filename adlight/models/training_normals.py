"""The training normals, seen once in evaluation mode: the data a fitted head is fitted on.

Under DDP each process extracts the features of its share of the training normals and all
of them are gathered, so every process fits the same head on the whole training set.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from adlight.errors import ConfigError
from adlight.metrics.epoch_outputs import drop_repeated_indices


def training_normals_dataset(trainer: L.Trainer) -> Dataset:
    """The datamodule's training normals without augmentation (``train_eval_dataset()``)."""
    datamodule = trainer.datamodule
    if datamodule is None or not hasattr(datamodule, "train_eval_dataset"):
        raise ConfigError(
            "fitting a one-class head needs an adlight datamodule (with train_eval_dataset()); "
            f"got {type(datamodule).__name__}: pass datamodule= to fit"
        )
    return datamodule.train_eval_dataset()


def training_normals_loader(trainer: L.Trainer) -> DataLoader:
    """This process's share of the training normals, in order, unaugmented."""
    dataset = training_normals_dataset(trainer)
    sampler = None
    if trainer.world_size > 1:
        sampler = DistributedSampler(dataset, num_replicas=trainer.world_size,
                                     rank=trainer.global_rank, shuffle=False)
    return DataLoader(dataset, batch_size=trainer.datamodule.batch_size, sampler=sampler,
                      num_workers=getattr(trainer.datamodule, "num_workers", 0))


@torch.no_grad()
def training_intensity_reference(trainer: L.Trainer, backbone) -> tuple[float, float]:
    """The training normals' average per-image (mean, std) as ``backbone`` sees them
    (``Backbone.intensity_moments``), over all processes, each image once: the
    DistributedSampler's padding repeat is dropped, so a DDP fit gets the one-process reference."""
    moments, indices = [], []
    for batch in training_normals_loader(trainer):
        moments.append(backbone.intensity_moments(trainer.strategy.batch_to_device(batch)["image"]))
        indices.append(trainer.strategy.batch_to_device(batch)["index"])
    if not moments:
        raise ConfigError("intensity='image' needs training images to set its reference: the train split is empty")
    moments, indices = torch.cat(moments), torch.cat(indices)
    if trainer.world_size > 1:
        moments = trainer.strategy.all_gather(moments).flatten(0, 1)
        indices = trainer.strategy.all_gather(indices).flatten(0, 1)
    average = moments[drop_repeated_indices(indices)].double().mean(dim=0)
    return float(average[0]), float(average[1])


@torch.no_grad()
def gather_training_features(trainer: L.Trainer, model) -> torch.Tensor:
    """``model.head_features`` of every training normal, gathered from all processes, in dataset order."""
    loader = training_normals_loader(trainer)
    was_training = model.training
    model.eval()
    features, indices = [], []
    for batch in loader:
        batch = trainer.strategy.batch_to_device(batch)
        # in the trainer's precision (autocast under "bf16-mixed"/"16-mixed"), as test_step
        # scores: the head is fitted on the features it will be asked to score
        with trainer.precision_plugin.test_step_context():
            features.append(model.head_features(batch).to(model.head_feature_dtype))
        indices.append(batch["index"])
    model.train(was_training)
    features, indices = torch.cat(features), torch.cat(indices)
    if trainer.world_size > 1:
        features = model.all_gather(features).flatten(0, 1)
        indices = model.all_gather(indices).flatten(0, 1)
    return features[drop_repeated_indices(indices)]


def is_last_epoch(trainer: L.Trainer) -> bool:
    """Whether the epoch ending now is the last one fit will run (as far as can be known)."""
    max_epochs, max_steps = trainer.max_epochs, trainer.max_steps
    return (trainer.should_stop
            or (max_epochs is not None and max_epochs >= 0 and trainer.current_epoch + 1 >= max_epochs)
            or (max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps))
