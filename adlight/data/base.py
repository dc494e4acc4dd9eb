"""The base every adlight datamodule derives from.

A subclass implements :meth:`AnomalyDataModule._build_splits`, returning the train, val and
test datasets and the class names; the base owns argument checks, dataloaders, the optional
``predict_dir`` and ``split.csv``.
"""

from __future__ import annotations

import copy
import csv
import filecmp
import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from adlight.checks import (
    check_fraction,
    check_image_size,
    check_int,
    check_seed,
    image_shape,
    is_int,
)
from adlight.data.datasets import ImageFileDataset, Sample, TensorImageDataset, collate_batches
from adlight.data.image_tensors import list_images, warn_not_images
from adlight.data.loader import LoaderOptions, usable_workers
from adlight.data.predict import PredictImageDataset, PredictLoader, collate_readable
from adlight.data.threshold_normals import hold_out_threshold_normals
from adlight.data.transforms import eval_transform
from adlight.errors import DataError

SPLIT_FILE = "split.csv"


@dataclass
class SplitDatasets:
    """What :meth:`AnomalyDataModule._build_splits` returns.

    Datasets are :class:`ImageFileDataset` or :class:`TensorImageDataset` (anything with
    ``rows()`` giving ``(path, label, class_id)``); ``val`` is ``None`` when there is no
    validation split.
    """

    train: Dataset
    val: Dataset | None
    test: Dataset
    class_names: list[str]
    #: training normals held out of ``train`` to choose the image threshold (``threshold_normals``)
    threshold_normals: Dataset | None = None


class AnomalyDataModule(L.LightningDataModule):
    """Base datamodule: batches follow ``docs/contracts.md``.

    Args:
        image_size: images (and masks) are resized to ``image_size x image_size``, or to
            ``[height, width]`` (e.g. ``[640, 256]`` keeps a tall surface's aspect).
        channels: 1 (grayscale) or 3 (RGB); files of the other kind are converted.
        seed: seeds every split, so the same seed gives the same split on every process.
        predict_dir: when given, ``predict_dataloader`` yields every image file under this
            folder (recursively, sorted, ``label`` and ``class_id`` -1) instead of the test split.
            A file that cannot be decoded is skipped with a warning and listed under
            ``unreadable`` in its batch (:mod:`adlight.data.predict`).
        strict_predict: stop at the first predict file that cannot be decoded instead.
        loader: batch size, workers, image cache and train-only augmentations.
        threshold_normals: share of the training normals (seeded) held out of training to
            choose the image threshold when the validation split is too small for an
            F1-optimal one (``min_val_images``); 0 (default) holds none out and warns instead.
            The model then takes a high quantile of their scores
            (:mod:`adlight.models.normal_threshold`); ``split.csv`` lists them as ``threshold``.
        min_val_images: the fewest normal and the fewest anomalous validation images an
            F1-optimal image threshold is chosen from; below it ``threshold_normals`` applies.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int] = 128,
        channels: int = 3,
        seed: int = 0,
        predict_dir: str | None = None,
        strict_predict: bool = False,
        loader: LoaderOptions = LoaderOptions(),  # noqa: B008 (frozen: shared safely)
        threshold_normals: float = 0.0,
        min_val_images: int = 10,
    ) -> None:
        super().__init__()
        if not isinstance(loader, LoaderOptions):
            raise DataError(f"loader must be a LoaderOptions, got {type(loader).__name__}")
        self.loader = loader
        self._image_size = check_image_size("image_size", image_size, 1, DataError)
        if not is_int(channels) or channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels!r}")
        self._channels = channels
        self.seed = check_seed("seed", seed, DataError)
        self.predict_dir = None if predict_dir is None else str(predict_dir)
        if not isinstance(strict_predict, bool):
            raise DataError(f"strict_predict must be true or false, got {strict_predict!r}")
        self.strict_predict = strict_predict
        self.threshold_normals = check_fraction("threshold_normals", threshold_normals, error=DataError)
        self.min_val_images = check_int("min_val_images", min_val_images, 1, DataError)
        self._splits: SplitDatasets | None = None
        self._predict_set: Dataset | None = None
        self._batch_augmentation = loader.batch_augmentation()

    # ----------------------------------------------------------------- for subclasses
    def _build_splits(self) -> SplitDatasets:
        """Read the data and return the train/val/test datasets and class names.

        Must be deterministic given the constructor arguments (every DDP process calls it).
        """
        raise NotImplementedError

    # ----------------------------------------------------------------- properties
    @property
    def batch_size(self) -> int:
        return self.loader.batch_size

    @property
    def num_workers(self) -> int:
        return usable_workers(self.loader.num_workers)

    @property
    def cache_images(self) -> bool:
        return self.loader.cache_images

    @property
    def image_size(self) -> int | tuple[int, int]:
        """The size of every ``image`` (and ``mask``): an int (square) or ``(height, width)``."""
        return self._image_size

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(height, width)`` of every ``image`` (and ``mask``)."""
        return image_shape(self._image_size)

    @property
    def channels(self) -> int:
        """Channels of every ``image``: 1 or 3."""
        return self._channels

    @property
    def class_names(self) -> list[str]:
        """Names that ``class_id`` indexes (reads the data on first use)."""
        return list(self._ensure_splits().class_names)

    @property
    def train_dataset(self) -> Dataset:
        return self._ensure_splits().train

    @property
    def val_dataset(self) -> Dataset | None:
        return self._ensure_splits().val

    @property
    def test_dataset(self) -> Dataset:
        return self._ensure_splits().test

    @property
    def predict_dataset(self) -> Dataset:
        if self.predict_dir is None:
            return self.test_dataset
        if self._predict_set is None:
            self._predict_set = self._build_predict_set()
        return self._predict_set

    def threshold_normals_dataset(self) -> Dataset | None:
        """The training normals held out to choose the image threshold (``None``: none were)."""
        return self._ensure_splits().threshold_normals

    def threshold_normals_dataloader(self) -> DataLoader | None:
        """A loader over :meth:`threshold_normals_dataset` (``None`` when there is none)."""
        ds = self.threshold_normals_dataset()
        return None if ds is None or len(ds) == 0 else self._loader(ds, shuffle=False)

    def train_eval_dataset(self) -> Dataset:
        """The training normals with the eval transform (no augmentation), in a fixed order.

        What one-class heads (KDE, OCSVM) and feature statistics are fitted on; ``index`` is the
        position in this dataset.
        """
        ds = self.train_dataset
        if isinstance(ds, ImageFileDataset):
            normals = [s for s in ds.samples if s.label == 0]
            view = copy.copy(ds)  # shares the image cache with the training set
            view.samples = normals
            view.transform = None if ds.resize is not None else eval_transform(self.image_size)
            return view
        if isinstance(ds, TensorImageDataset):
            keep = [i for i, lab in enumerate(ds.labels) if lab == 0]
            return ds.subset(keep, transform=None)
        raise TypeError(f"train_eval_dataset() does not know {type(ds).__name__}")

    def split_counts(self) -> dict[str, dict[str, int]]:
        """``{"train"|"val"|"test": {"normal": n, "anomalous": m}}`` of the current split."""
        out = {}
        s = self._ensure_splits()
        for name, ds in (("train", s.train), ("val", s.val), ("test", s.test),
                         ("threshold", s.threshold_normals)):
            if name == "threshold" and ds is None:
                continue
            labels = [r[1] for r in ds.rows()] if ds is not None else []
            out[name] = {"normal": labels.count(0), "anomalous": labels.count(1)}
        return out

    @property
    def num_train_normals(self) -> int:
        return self.split_counts()["train"]["normal"]

    # ----------------------------------------------------------------- lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" and self.predict_dir is not None:
            dataset = self.predict_dataset  # lists the folder: a bad predict_dir fails here
            if self.strict_predict:
                dataset.check_decodable()
            return
        self._ensure_splits()
        self._write_split_csv()

    def train_dataloader(self) -> DataLoader:
        ds = self.train_dataset
        if len(ds) == 0:
            raise DataError(f"{type(self).__name__}: the train split is empty")
        return self._loader(ds, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        ds = self.val_dataset
        if ds is None or len(ds) == 0:
            return []  # no validation split (val_fraction=0): Lightning skips validation
        return self._loader(ds, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        ds = self.test_dataset
        if len(ds) == 0:
            raise DataError(f"{type(self).__name__}: the test split is empty")
        return self._loader(ds, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        ds = self.predict_dataset
        if isinstance(ds, PredictImageDataset):
            return PredictLoader(ds, batch_size=self.batch_size, shuffle=False,
                                 num_workers=self.num_workers, collate_fn=collate_readable,
                                 pin_memory=torch.cuda.is_available())
        return self._loader(ds, shuffle=False)

    def augment_batch(self, batch: dict) -> dict:
        """A training batch with the train-only augmentations (``loader``), each image drawn on
        its own; a new dict, the batch given is not changed."""
        if self._batch_augmentation is None or not isinstance(batch, dict) or "image" not in batch:
            return batch
        out = dict(batch)
        out["image"], mask = self._batch_augmentation(batch["image"], batch.get("mask"))
        if mask is not None:
            out["mask"] = mask
        return out

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        # training batches only (not validation inside fit, not test or predict), on the device
        # they were moved to: one batched rotation/flip/noise pass instead of one per image
        trainer = getattr(self, "trainer", None)
        if trainer is not None and trainer.training:
            return self.augment_batch(batch)
        return batch

    # ----------------------------------------------------------------- internals
    def _ensure_splits(self) -> SplitDatasets:
        if self._splits is None:
            splits = self._build_splits()
            if len(splits.train) == 0:
                raise DataError(f"{type(self).__name__}: no training images after splitting")
            self._warn_one_class_val(splits.val)
            self._splits = hold_out_threshold_normals(splits, self.threshold_normals,
                                                      self.min_val_images, self.seed, self.image_size)
        return self._splits

    def _warn_one_class_val(self, val: Dataset | None) -> None:
        """Say which class a validation split lacks: thresholds need both (``val_f1``)."""
        labels = {r[1] for r in val.rows()} if val is not None else set()
        if len(labels) != 1:
            return
        missing, present = ("anomalous", "normal") if labels == {0} else ("normal", "anomalous")
        rank_zero_warn(
            f"{type(self).__name__}: the validation split has no {missing} images (only "
            f"{len(val)} {present} ones), so no F1-optimal threshold can be chosen on it; give "
            f"it {missing} images or use fixed image_threshold/pixel_threshold values"
        )

    def _file_splits(self, train: list[Sample], val: list[Sample], test: list[Sample],
                     class_names: list[str], has_masks: bool) -> SplitDatasets:
        """Image-file datasets of the three splits (train is augmented by batch, in
        :meth:`on_after_batch_transfer`), no val when it is empty."""

        def make(samples: list[Sample], augment) -> ImageFileDataset:
            return ImageFileDataset(samples, augment, self.channels, has_masks=has_masks,
                                    resize=self.image_size, cache=self.cache_images)

        return SplitDatasets(
            train=make(train, None),
            val=make(val, None) if val else None,
            test=make(test, None),
            class_names=class_names,
        )

    def _loader(self, ds: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            drop_last=False,
            collate_fn=collate_batches,
        )

    def _build_predict_set(self) -> PredictImageDataset:
        # broken symlinks too: they are listed in scores.csv with their error, never dropped
        files = list_images(self.predict_dir, argument="predict_dir", required=True, broken_links=True)
        warn_not_images(self.predict_dir, "predict_dir")
        samples = [Sample(str(p), -1, -1) for p in files]
        return PredictImageDataset(samples, self.channels, self.image_size, self.strict_predict)

    def _write_split_csv(self) -> Path | None:
        """Write split.csv into the trainer's log_dir; nothing without a trainer."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return None
        log_dir = trainer.log_dir  # broadcasts: every rank must call it
        if log_dir is None or not trainer.is_global_zero:
            return None
        # Lightning creates the loggers' experiments before setup(), so writing here does not
        # make CSVLogger warn that its directory is not empty.
        # fit then test in one run directory: the split is recorded already. A file there
        # that differs (a logger-less run writes into default_root_dir, the working directory
        # by default) is never overwritten: this split goes into split-1.csv, split-2.csv...
        first = Path(log_dir) / SPLIT_FILE
        path, n = first, 0
        while path.exists():
            check = self.write_split_csv(first.with_name(f".{SPLIT_FILE}.{os.getpid()}"))
            same = filecmp.cmp(check, path, shallow=False)
            check.unlink()
            if same:
                return path
            n += 1
            path = first.with_name(f"{first.stem}-{n}{first.suffix}")
        self.write_split_csv(path)
        return path

    def write_split_csv(self, path: str | os.PathLike) -> Path:
        """Write ``path, split, label, class`` for every sample of train, val and test."""
        s = self._ensure_splits()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        names = s.class_names
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "split", "label", "class"])
            for split, ds in (("train", s.train), ("val", s.val), ("test", s.test),
                              ("threshold", s.threshold_normals)):
                if ds is None:
                    continue
                for p, label, cid in ds.rows():
                    w.writerow([p, split, label, names[cid] if 0 <= cid < len(names) else ""])
        return path
