"""Datasets that yield the batch contract of ``docs/contracts.md``.

Each item is a dict::

    image     float32 C x H x W in [0, 1]
    label     int: 0 normal, 1 anomalous, -1 unlabelled (predict folders)
    mask      float32 1 x H x W, 0/1 -- only when the dataset has masks (zeros for normals)
    path      str: the file, or "<source>:<id>" for in-memory data
    index     int: position in this dataset
    class_id  int: index into the datamodule's class_names (-1 when unknown)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from adlight.data.image_tensors import load_image
from adlight.data.masks import load_mask
from adlight.data.transforms import eval_transform
from adlight.errors import DataError


@dataclass(frozen=True)
class Sample:
    """One record of a split: the image file, its label and class, its mask and its group
    (e.g. a driver id, for group-disjoint splits)."""

    path: str
    label: int
    class_id: int
    mask_path: str | None = None
    group: str | None = None


def _plain(t: torch.Tensor) -> torch.Tensor:
    """Drop the tv_tensor subclass so batches are plain tensors."""
    return t.as_subclass(torch.Tensor).contiguous()


class ImageFileDataset(Dataset):
    """Images read from files, described by a list of :class:`Sample`.

    Args:
        samples: what to read.
        transform: v2 transform called as ``transform(image)`` or ``transform(image, mask)``
            on ``tv_tensors``; ``None`` keeps the file's size.
        channels: 1 or 3; files of the other kind are converted.
        has_masks: when true every item carries ``mask``: the mask file for samples that
            have one, zeros for normals; an anomalous sample without a mask is a
            :class:`DataError`.
        resize: when given, images (bilinear, antialiased) and masks (nearest) are resized
            to ``resize x resize`` and quantised to 8 bits *before* ``transform``, which then
            only augments.
        cache: keep those resized 8-bit images in memory (``N x C x resize x resize`` bytes),
            so each file is decoded once instead of every epoch. Measured on MVTec bottle
            (209 PNGs, 256 -> 128 px): decoding and resizing took 5 s of every epoch.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Callable | None = None,
        channels: int = 3,
        has_masks: bool = False,
        resize: int | None = None,
        cache: bool = False,
    ) -> None:
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels!r}")
        self.samples = list(samples)
        self.transform = transform
        self.channels = channels
        self.has_masks = has_masks
        self.resize = resize
        self._resize = eval_transform(resize) if resize is not None else None
        # shared by shallow copies (e.g. the un-augmented view of the training set)
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor | None]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def rows(self) -> list[tuple[str, int, int]]:
        """``(path, label, class_id)`` of every item, in order (for split.csv)."""
        return [(s.path, s.label, s.class_id) for s in self.samples]

    def _read(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image (and mask) of one sample, resized and 8-bit when ``resize`` is set."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        image, mask = self._load(index)
        if self._resize is not None:
            if mask is not None:
                image, mask = self._resize(tv_tensors.Image(image), tv_tensors.Mask(mask))
                mask = _plain(mask).to(torch.uint8)
            else:
                image = self._resize(tv_tensors.Image(image))
            # 8 bits like the files: a cached and an uncached read give the same pixels
            image = (_plain(image) * 255.0).round().to(torch.uint8)
        if self._cache is not None:
            self._cache[index] = (image, mask)
        return image, mask

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        image, mask = self._read(index)
        if image.dtype == torch.uint8:
            image = image.float() / 255.0
            mask = mask.float() if mask is not None else None
        image = tv_tensors.Image(image)
        if mask is not None:
            mask = tv_tensors.Mask(mask)
            if self.transform is not None:
                image, mask = self.transform(image, mask)
        elif self.transform is not None:
            image = self.transform(image)
        item = {
            "image": _plain(image).float(),
            "label": int(s.label),
            "path": str(s.path),
            "index": int(index),
            "class_id": int(s.class_id),
        }
        if mask is not None:
            item["mask"] = _plain(mask).float()
        return item

    def _load(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.samples[index]
        image = load_image(s.path, self.channels)
        mask = None
        if self.has_masks:
            if s.mask_path is not None:
                w, h = image.shape[-1], image.shape[-2]
                mask = load_mask(s.mask_path, image_size=(w, h), image_path=s.path)
            elif s.label == 1:
                raise DataError(f"anomalous image {s.path} has no mask, but this dataset has masks")
            else:
                mask = torch.zeros((1, *image.shape[-2:]), dtype=torch.float32)
        return image, mask


class TensorImageDataset(Dataset):
    """In-memory images (e.g. scikit-learn's digits) with the same items as files.

    Args:
        images: float ``N x C x H x W`` in [0, 1].
        labels: ``N`` ints (0 normal, 1 anomalous).
        class_ids: ``N`` ints into the datamodule's ``class_names``.
        source: name used in ``path`` as ``"<source>:<id>"``.
        ids: ``N`` ids for ``path`` (e.g. positions in the original array); default 0..N-1.
        masks: optional float ``N x 1 x H x W`` 0/1.
        transform: optional v2 transform, called like :class:`ImageFileDataset`'s.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: Sequence[int] | torch.Tensor,
        class_ids: Sequence[int] | torch.Tensor,
        source: str = "memory",
        ids: Sequence[int] | None = None,
        masks: torch.Tensor | None = None,
        transform: Callable | None = None,
    ) -> None:
        images = torch.as_tensor(images)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise DataError(
                f"images must be N x C x H x W with C 1 or 3, got shape {tuple(images.shape)}"
            )
        if not images.is_floating_point():
            raise DataError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
        n = images.shape[0]
        labels = [int(x) for x in torch.as_tensor(labels).reshape(-1).tolist()]
        class_ids = [int(x) for x in torch.as_tensor(class_ids).reshape(-1).tolist()]
        ids = list(range(n)) if ids is None else [int(i) for i in ids]
        for name, seq in (("labels", labels), ("class_ids", class_ids), ("ids", ids)):
            if len(seq) != n:
                raise DataError(f"{name} has {len(seq)} entries but images has {n}")
        if masks is not None:
            masks = torch.as_tensor(masks).float()
            if masks.shape != (n, 1, *images.shape[-2:]):
                raise DataError(
                    f"masks must have shape {(n, 1, *images.shape[-2:])}, got {tuple(masks.shape)}"
                )
        self.images = images.float().contiguous()
        self.labels = labels
        self.class_ids = class_ids
        self.ids = ids
        self.source = source
        self.masks = masks
        self.transform = transform

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    def subset(
        self, positions: Sequence[int], transform: Callable | None = None
    ) -> TensorImageDataset:
        """A new dataset of the items at ``positions`` (keeping their ids), with ``transform``."""
        idx = list(positions)
        return TensorImageDataset(
            self.images[idx],
            [self.labels[i] for i in idx],
            [self.class_ids[i] for i in idx],
            source=self.source,
            ids=[self.ids[i] for i in idx],
            masks=None if self.masks is None else self.masks[idx],
            transform=transform,
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    def rows(self) -> list[tuple[str, int, int]]:
        """``(path, label, class_id)`` of every item, in order (for split.csv)."""
        return [
            (f"{self.source}:{i}", lab, c)
            for i, lab, c in zip(self.ids, self.labels, self.class_ids, strict=True)
        ]

    def __getitem__(self, index: int) -> dict:
        image = tv_tensors.Image(self.images[index])
        mask = tv_tensors.Mask(self.masks[index]) if self.masks is not None else None
        if self.transform is not None:
            if mask is not None:
                image, mask = self.transform(image, mask)
            else:
                image = self.transform(image)
        item = {
            "image": _plain(image).float(),
            "label": self.labels[index],
            "path": f"{self.source}:{self.ids[index]}",
            "index": int(index),
            "class_id": self.class_ids[index],
        }
        if mask is not None:
            item["mask"] = _plain(mask).float()
        return item
