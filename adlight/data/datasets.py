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
from torch.utils.data import Dataset, default_collate
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


class CollatedItems(list):
    """The items of a batch read at once (``__getitems__``), with their collated batch in
    ``batch``: :func:`collate_batches` returns that batch, and any other ``collate_fn`` (torch's
    ``default_collate``) sees the plain list of items it expects."""

    def __init__(self, items: list[dict], batch: dict) -> None:
        super().__init__(items)
        self.batch = batch


def collate_batches(data: list):
    """The datamodules' ``collate_fn``: a batch the dataset collated already
    (:class:`CollatedItems`) as it is, any other list of items by ``default_collate``."""
    return data.batch if isinstance(data, CollatedItems) else default_collate(data)


class ImageCache:
    """Resized 8-bit images (and masks) of a list of samples in one ``N x C x H x W`` uint8
    tensor (masks ``N x 1 x H x W``), allocated on the first read and filled row by row.

    A row is found by its :class:`Sample`, so datasets over subsets of those samples share it.
    Rows are never stale: a sample's image is written once, from its file.
    """

    def __init__(self, samples: Sequence[Sample]) -> None:
        self._rows: dict[Sample, int] = {}
        for s in samples:
            self._rows.setdefault(s, len(self._rows))
        self.images: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        self._filled = torch.zeros(len(self._rows), dtype=torch.bool)

    def row(self, sample: Sample) -> int | None:
        return self._rows.get(sample)

    def get(self, sample: Sample) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The cached ``(image, mask)`` of ``sample`` (views into the tensors), or ``None``."""
        row = self._rows.get(sample)
        if row is None or not self._filled[row]:
            return None
        return self.images[row], None if self.masks is None else self.masks[row]

    def put(self, sample: Sample, image: torch.Tensor, mask: torch.Tensor | None) -> None:
        row = self._rows.get(sample)
        if row is None:
            return  # a sample added to a view after the cache was made: read from its file
        if self.images is None:
            self.images = torch.empty((len(self._rows), *image.shape), dtype=torch.uint8)
            if mask is not None:
                self.masks = torch.empty((len(self._rows), *mask.shape), dtype=torch.uint8)
        self.images[row] = image
        if mask is not None:
            self.masks[row] = mask
        self._filled[row] = True


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
        cache: keep those resized 8-bit images in memory, in one ``N x C x H x W`` uint8
            tensor (:class:`ImageCache`; masks in one ``N x 1 x H x W``), so each file is
            decoded once instead of every epoch; needs ``resize``. Measured on MVTec bottle
            (209 PNGs, 256 -> 128 px): decoding and resizing took 5 s of every epoch.

    Without ``transform``, a batch of indices is read at once (``__getitems__``, which the
    DataLoader calls): the cached rows are gathered and scaled to float in one operation, and
    the datamodules' loaders take that batch as it is (:func:`collate_batches`).
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
        # keyed by sample, so shallow copies with other sample lists (the un-augmented view of
        # the training normals, held-out threshold normals) share it
        self._cache = ImageCache(self.samples) if cache and resize is not None else None

    def __len__(self) -> int:
        return len(self.samples)

    def rows(self) -> list[tuple[str, int, int]]:
        """``(path, label, class_id)`` of every item, in order (for split.csv)."""
        return [(s.path, s.label, s.class_id) for s in self.samples]

    def _read(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The image (and mask) of one sample, resized and 8-bit when ``resize`` is set."""
        sample = self.samples[index]
        cached = self._cache.get(sample) if self._cache is not None else None
        if cached is not None:
            return cached
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
            self._cache.put(sample, image, mask)
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

    def __getitems__(self, indices: Sequence[int]) -> list[dict]:
        """The items at ``indices``; read from the cache without a per-item ``transform``, they
        come as :class:`CollatedItems`: gathered and scaled to float in one operation."""
        indices = [int(i) for i in indices]
        if self._cache is None or self.transform is not None or not indices:
            return [self[i] for i in indices]
        rows = []
        for i in indices:
            self._read(i)  # fills the cache on the first epoch
            rows.append(self._cache.row(self.samples[i]))
        if None in rows:  # a sample the cache was not made for (added to a view later)
            return [self[i] for i in indices]
        positions = torch.tensor(rows)
        samples = [self.samples[i] for i in indices]
        batch = {
            "image": self._cache.images.index_select(0, positions).float().div_(255.0),
            "label": torch.tensor([int(s.label) for s in samples]),
            "path": [str(s.path) for s in samples],
            "index": torch.tensor(indices),
            "class_id": torch.tensor([int(s.class_id) for s in samples]),
        }
        if self.has_masks:
            batch["mask"] = self._cache.masks.index_select(0, positions).float()
        items = [{"image": batch["image"][k], "label": int(s.label), "path": str(s.path),
                  "index": i, "class_id": int(s.class_id),
                  **({"mask": batch["mask"][k]} if self.has_masks else {})}
                 for k, (i, s) in enumerate(zip(indices, samples, strict=True))]
        return CollatedItems(items, batch)

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
