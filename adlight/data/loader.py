"""The loader and augmentation options every datamodule takes, as one group (``loader``)."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from torchvision.transforms import v2

from adlight.checks import check_int
from adlight.data.batch_augmentation import BatchAugmentation
from adlight.data.transforms import augmentation_transform
from adlight.errors import DataError


@dataclass(frozen=True)
class LoaderOptions:
    """How batches are loaded and augmented (``--data.loader.*`` on the command line).

    Args:
        batch_size: images per batch in every stage.
        num_workers: DataLoader worker processes (they persist across epochs when > 0).
        cache_images: keep decoded, resized image files in memory after their first read.
        rotation_degrees: train only: rotate by an angle uniform in [-d, d] (0: off).
        hflip: train only: flip horizontally with probability 0.5.
        vflip: train only: flip vertically with probability 0.5.
        noise_std: train only: add Gaussian noise of this std to the image (0: off).

    The datamodules apply the augmentations to each training batch as a whole, after it has
    moved to the training device (``on_after_batch_transfer``, :meth:`batch_augmentation`):
    ``train_dataloader()`` itself yields the images unaugmented.
    """

    batch_size: int = 32
    num_workers: int = 0
    cache_images: bool = True
    rotation_degrees: float = 0.0
    hflip: bool = False
    vflip: bool = False
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        check_int("loader.batch_size", self.batch_size, 1, DataError)
        check_int("loader.num_workers", self.num_workers, 0, DataError)
        self.augmentation()  # checks the augmentation options now, not at setup

    def augmentation(self) -> v2.Compose | None:
        """The train-only augmentations switched on, per image (``None`` when all are off)."""
        return augmentation_transform(self.rotation_degrees, self.hflip, self.vflip,
                                      self.noise_std)

    def batch_augmentation(self) -> BatchAugmentation | None:
        """The same augmentations over whole batches (``None`` when all are off)."""
        augment = BatchAugmentation(self.rotation_degrees, self.hflip, self.vflip, self.noise_std)
        return augment if augment.active else None


def usable_workers(asked: int) -> int:
    """``asked``, or the CPUs this process may use when it asks for more: a typo's 100000 would
    fork until a shared node freezes. A warning names the argument."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if asked <= cpus:
        return asked
    warnings.warn(f"loader.num_workers {asked} is more than the {cpus} CPUs this process may use; "
                  f"using {cpus}", stacklevel=2)
    return cpus
