"""Labelled image sources for class splits: every image with the index of its class.

A source is read into one or two :class:`ClassPool` (the official train and, where the source
has one, the official test set); the class-split datamodules (:mod:`adlight.data.class_datamodules`)
pick images from them by class and :meth:`ClassPool.dataset` turns the picks into a dataset:

- ``mnist``, ``fashion_mnist``, ``cifar10``: ``torchvision.datasets`` under ``root`` (their
  official train and test sets, downloaded only when asked), held in memory as uint8;
- ``folder``: ``root/<class>/**/<image>`` (and the same class folders under ``test_root``),
  read from the files when used;
- ``digits``: scikit-learn's bundled 8x8 digits (one pool, no download).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from adlight.data.datasets import ImageFileDataset, Sample, TensorImageDataset
from adlight.data.image_tensors import is_image_file, list_images
from adlight.data.transforms import eval_transform
from adlight.errors import DataError

TORCHVISION_SOURCES: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10")
SOURCES: tuple[str, ...] = (*TORCHVISION_SOURCES, "folder", "digits")

# "0".."9" instead of torchvision's "0 - zero": the names of the mnist_test class folders and of
# DigitsDataModule, so a config's class names work with every digit source
DIGIT_NAMES = [str(d) for d in range(10)]


class ResizingTensorDataset(TensorImageDataset):
    """A :class:`TensorImageDataset` that keeps images at their own size and resizes per item.

    Resizing 50,000 CIFAR-10 images to 224 px up front would take 30 GB as float; resizing each
    item when it is read costs a fraction of a millisecond. ``resize`` (bilinear, antialiased,
    like image files) runs before ``augment`` and survives :meth:`subset`, so the base class's
    un-augmented view of the training set (``train_eval_dataset``) still has ``image_size``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: Sequence[int],
        class_ids: Sequence[int],
        source: str,
        ids: Sequence[int],
        resize: int | None = None,
        augment: Callable | None = None,
    ) -> None:
        steps = []
        if resize is not None and tuple(images.shape[-2:]) != (resize, resize):
            steps.append(eval_transform(resize))
        if augment is not None:
            steps.append(augment)
        transform = None if not steps else steps[0] if len(steps) == 1 else v2.Compose(steps)
        super().__init__(images, labels, class_ids, source=source, ids=ids, transform=transform)
        self.resize = resize
        self.augment = augment

    def subset(
        self, positions: Sequence[int], transform: Callable | None = None
    ) -> ResizingTensorDataset:
        """The items at ``positions`` (ids kept), still resized, with ``transform`` as augment."""
        idx = list(positions)
        return ResizingTensorDataset(
            self.images[idx],
            [self.labels[i] for i in idx],
            [self.class_ids[i] for i in idx],
            source=self.source,
            ids=[self.ids[i] for i in idx],
            resize=self.resize,
            augment=transform,
        )


def _to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Float N x C x H x W in [0, 1] with ``channels`` channels (gray repeated, RGB to luma)."""
    if images.shape[1] == channels:
        return images
    if channels == 3:
        return images.repeat(1, 3, 1, 1)
    return TF.rgb_to_grayscale(images, num_output_channels=1)


@dataclass
class ClassPool:
    """Images of one split of a source, each with its class (an index into ``class_names``).

    Exactly one of ``files`` (one path per image) and ``images`` (N x C x H x W, uint8 or float
    in [0, 1], at the source's own size) is set. ``name`` names the pool in messages and, for
    in-memory images, in each item's ``path`` (``"<name>:<position in the pool>"``).
    """

    name: str
    targets: list[int]
    files: list[str] | None = None
    images: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.targets)

    def by_class(self, n_classes: int) -> list[list[int]]:
        """Positions of each class's images, in pool order."""
        out: list[list[int]] = [[] for _ in range(n_classes)]
        for i, t in enumerate(self.targets):
            out[t].append(i)
        return out

    def dataset(
        self,
        positions: Sequence[int],
        labels: Sequence[int],
        channels: int,
        image_size: int,
        augment: Callable | None,
        cache: bool,
    ):
        """The images at ``positions`` as a contract dataset with these ``labels``."""
        positions = list(positions)
        class_ids = [self.targets[i] for i in positions]
        if self.files is not None:
            samples = [
                Sample(self.files[i], int(lab), c)
                for i, lab, c in zip(positions, labels, class_ids, strict=True)
            ]
            return ImageFileDataset(
                samples, augment, channels, has_masks=False, resize=image_size, cache=cache
            )
        assert self.images is not None
        picked = self.images[positions]
        picked = picked.float() / 255.0 if picked.dtype == torch.uint8 else picked.float()
        return ResizingTensorDataset(
            _to_channels(picked, channels),
            [int(lab) for lab in labels],
            class_ids,
            source=self.name,
            ids=positions,
            resize=image_size,
            augment=augment,
        )


@dataclass
class LabelledSource:
    """What :func:`load_source` returns: class names, the train pool and the test pool
    (``None`` when test images must be drawn from the train pool)."""

    class_names: list[str]
    train: ClassPool
    test: ClassPool | None


# ------------------------------------------------------------------------- torchvision


def _torchvision_class(source: str):
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST,
            "cifar10": datasets.CIFAR10}[source]


def _layout(source: str, root: Path) -> str:
    if source == "cifar10":
        return f"{root / 'cifar-10-batches-py'}/{{data_batch_1..5, test_batch, batches.meta}}"
    folder = "MNIST" if source == "mnist" else "FashionMNIST"
    return f"{root / folder / 'raw'}/{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte"


def open_torchvision(source: str, root: Path, train: bool, download: bool):
    """The torchvision dataset, or :class:`DataError` naming ``root`` when it is not there."""
    cls = _torchvision_class(source)
    if download:
        try:  # present already: skip torchvision's second pass over the files' md5 sums
            return cls(str(root), train=train, download=False)
        except Exception:
            pass
    try:
        return cls(str(root), train=train, download=download)
    except Exception as e:  # torchvision: RuntimeError when missing, others when corrupt
        what = "train" if train else "test"
        hint = (
            "the download or the files failed"
            if download
            else "set download: true to fetch it (or point root at the folder that holds it)"
        )
        raise DataError(
            f"{source} ({what} set) could not be read from root {root}: {type(e).__name__}: "
            f"{e}. Expected {_layout(source, root)}; {hint}"
        ) from e


def _torchvision_pool(
    source: str, root: Path, train: bool, download: bool
) -> tuple[ClassPool, list[str]]:
    ds = open_torchvision(source, root, train, download)
    data = torch.as_tensor(ds.data)
    images = data.permute(0, 3, 1, 2) if data.ndim == 4 else data.unsqueeze(1)  # N x C x H x W
    targets = [int(t) for t in torch.as_tensor(ds.targets).tolist()]
    pool = ClassPool(f"{source}:{'train' if train else 'test'}", targets, images=images)
    return pool, list(DIGIT_NAMES) if source == "mnist" else list(ds.classes)


def _torchvision_source(source: str, root: Path, download: bool) -> LabelledSource:
    train, names = _torchvision_pool(source, root, True, download)
    test, _ = _torchvision_pool(source, root, False, download)
    return LabelledSource(names, train, test)


# ------------------------------------------------------------------------- folders


def class_folders(root: Path, argument: str) -> list[str]:
    """Sorted names of the (non-hidden) sub-folders of ``root``: the class names."""
    if not root.is_dir():
        raise DataError(f"{argument} {root} does not exist or is not a directory")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise DataError(
            f"{argument} {root} has no class sub-folders; expected {root}/<class>/<image files>"
        )
    loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
    if loose:
        rank_zero_warn(
            f"{argument} {root}: {len(loose)} image file(s) directly in it belong to no class "
            "folder and are not used"
        )
    return names


def _folder_pool(root: Path, names: list[str], argument: str) -> ClassPool:
    files: list[str] = []
    targets: list[int] = []
    for k, name in enumerate(names):
        found = list_images(root / name, argument=f"{argument} class folder")
        files += [str(f) for f in found]
        targets += [k] * len(found)
    if not files:
        raise DataError(f"{argument} {root}: none of its class folders {names} holds an image")
    return ClassPool(str(root), targets, files=files)


def _folder_source(root: Path, test_root: Path | None) -> LabelledSource:
    names = class_folders(root, "root")
    test = None
    if test_root is not None:
        test_names = class_folders(test_root, "test_root")
        if test_names != names:
            raise DataError(
                f"test_root {test_root} must hold the same class folders as root {root}: "
                f"only in root: {sorted(set(names) - set(test_names)) or 'none'}, only in "
                f"test_root: {sorted(set(test_names) - set(names)) or 'none'}"
            )
        test = _folder_pool(test_root, names, "test_root")
    return LabelledSource(names, _folder_pool(root, names, "root"), test)


# ------------------------------------------------------------------------- digits


def _digits_source() -> LabelledSource:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)  # N x 1 x 8 x 8
    targets = [int(t) for t in digits.target]
    return LabelledSource(list(DIGIT_NAMES), ClassPool("digits", targets, images=images), None)


def load_source(
    source: str, root: str | None, test_root: str | None = None, download: bool = False
) -> LabelledSource:
    """Read ``source`` (one of :data:`SOURCES`) into its class names and pools."""
    if source in TORCHVISION_SOURCES:
        assert root is not None
        return _torchvision_source(source, Path(root), download)
    if source == "folder":
        assert root is not None
        return _folder_source(Path(root), None if test_root is None else Path(test_root))
    if source == "digits":
        return _digits_source()
    raise DataError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
