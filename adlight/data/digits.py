"""One-vs-rest anomaly detection on scikit-learn's bundled handwritten digits.

``sklearn.datasets.load_digits`` ships with scikit-learn (1797 real 8x8 images, values 0..16),
so this datamodule needs no download: it is the quick, real-data check for every model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F

from adlight.checks import check_fraction, is_int
from adlight.data.base import AnomalyDataModule, SplitDatasets
from adlight.data.datasets import TensorImageDataset
from adlight.data.sources import DIGIT_NAMES, load_source
from adlight.data.splits import check_abnormal_train_fraction
from adlight.data.splits.fractions import hold_out
from adlight.errors import DataError


class DigitsDataModule(AnomalyDataModule):
    """Digits in ``normal_digits`` are normal (label 0), every other digit is anomalous (1).

    Every digit is split (seeded, stratified per digit) into train/val/test by
    ``train_fraction``/``val_fraction``/``test_fraction``. The train split keeps only the
    normal digits (plus ``abnormal_train_fraction`` of the anomalous digits' train share, for
    supervised families); val and test hold all ten digits. Images are scaled to [0, 1] and
    upsampled (bilinear) to ``image_size``; ``channels=3`` repeats the gray channel.
    ``class_names`` is ``["0", ..., "9"]`` and ``class_id`` is the digit; ``path`` is
    ``"digits:<index in load_digits>"``.
    """

    def __init__(
        self,
        normal_digits: Sequence[int] = (0,),
        train_fraction: float = 0.6,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        abnormal_train_fraction: float = 0.0,
        image_size: int = 32,
        channels: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(image_size=image_size, channels=channels, **kwargs)
        if isinstance(normal_digits, int):
            normal_digits = [normal_digits]
        normal = sorted(set(normal_digits))
        if not normal or any(
            not is_int(d) or not 0 <= d <= 9 for d in normal
        ):
            raise DataError(
                f"normal_digits must be a non-empty list of ints in 0..9, got {list(normal_digits)!r}"
            )
        if len(normal) == 10:
            raise DataError("normal_digits lists all ten digits; nothing would be anomalous")
        self.normal_digits = normal
        self.train_fraction = check_fraction("train_fraction", train_fraction, error=DataError)
        self.val_fraction = check_fraction("val_fraction", val_fraction, error=DataError)
        self.test_fraction = check_fraction("test_fraction", test_fraction, error=DataError)
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if total > 1 + 1e-9:
            raise DataError(
                f"train_fraction + val_fraction + test_fraction must be <= 1, got "
                f"{train_fraction} + {val_fraction} + {test_fraction} = {total:g}"
            )
        if self.train_fraction <= 0 or self.test_fraction <= 0:
            raise DataError(
                f"train_fraction and test_fraction must be > 0, got {train_fraction} and {test_fraction}"
            )
        self.abnormal_train_fraction = check_abnormal_train_fraction(abnormal_train_fraction)

    @property
    def normal_class_ids(self) -> list[int]:
        """``class_id`` of the normal digits (sub-categories for an auxiliary task)."""
        return list(self.normal_digits)

    def _build_splits(self) -> SplitDatasets:
        digits = load_source("digits", None).train
        images = digits.images  # N x 1 x 8 x 8 in [0, 1]
        if self.image_size != images.shape[-1]:
            images = F.interpolate(
                images,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
            ).clamp_(0.0, 1.0)
        if self.channels == 3:
            images = images.repeat(1, 3, 1, 1)
        targets = digits.targets
        labels = [0 if t in self.normal_digits else 1 for t in targets]
        train_i, val_i, test_i = hold_out(
            targets, labels, [self.train_fraction, self.val_fraction, self.test_fraction],
            self.abnormal_train_fraction, self.seed,
        )

        def make(idx: list[int], augment=None) -> TensorImageDataset:
            return TensorImageDataset(images[idx], [labels[i] for i in idx],
                                      [targets[i] for i in idx], source="digits", ids=idx,
                                      transform=augment)

        return SplitDatasets(
            train=make(train_i),  # augmented by batch: AnomalyDataModule.augment_batch
            val=make(val_i) if val_i else None,
            test=make(test_i),
            class_names=list(DIGIT_NAMES),
        )
