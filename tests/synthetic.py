"""Tiny synthetic image trees for tests (shared by every test file; owned by the data layer).

Normal images are a smooth sinusoidal RGB texture with a random phase per image; an anomaly
is the same texture with a pasted square of side ``size // 4`` that is bright (white) or dark
(black), so it stands out by at least 0.3 in [0, 1] units and an autoencoder can localise it.
Everything is seeded: the same arguments write the same bytes. Import it as
``from synthetic import make_mvtec_tree`` (pytest puts ``tests/`` on ``sys.path``).

API (all return paths; ``root`` is created when missing):

- ``make_mvtec_tree(root, category="bottle", n_train=8, n_good_test=4,
  defects={"scratch": 4}, size=64, defect="square", seed=0) -> Path``: writes the MVTec AD
  layout under ``root/category`` and returns ``root`` (pass it as ``MVTecDataModule(root=...)``).
- ``make_folder_tree(root, n_normal=10, abnormal=4, size=64, masks=False,
  mask_suffix="_mask", seed=0) -> dict``: ``root/normal``, ``root/abnormal`` (``abnormal`` an int:
  images directly in it; a dict ``{class: n}``: one sub-folder per class) and, with
  ``masks=True``, ``root/masks`` mirroring abnormal's sub-folders. Returns
  ``{"normal_dir", "abnormal_dir", "mask_dir"}`` (``mask_dir`` is ``None`` without masks).
- ``make_class_folder_tree(root, classes=("normal", "abnormal"), n_per_class=4, size=32,
  seed=0) -> Path``: ``root/<class>/<i>.png``; each class has its own colour and stripe
  direction, so a classifier can tell them apart. Returns ``root``.
- ``make_mnist_raw(root, folder="MNIST", n_train_per_class=6, n_test_per_class=4, size=28,
  seed=0) -> Path``: ten classes in torchvision's raw idx layout
  (``root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``; ``folder`` "MNIST" or
  "FashionMNIST"), read with ``download=False``. Returns ``root``.
- ``make_cifar10_batches(root, n_train_per_class=5, n_test_per_class=3, seed=0) -> Path``:
  ten classes as the pickled ``root/cifar-10-batches-py`` files (five data batches, test batch,
  ``batches.meta`` with the CIFAR-10 names). torchvision checks their md5 sums against the
  official files, so a test must let ``torchvision.datasets.cifar.check_integrity`` accept them.
- ``class_level(k)``: the gray level of class ``k``'s images in those two (every pixel except
  the first, which numbers the image within its class; RGB is ``(v, 255 - v, 128)``).
- ``normal_image(size, rng)`` / ``defect_image(size, rng, kind)``: the arrays (uint8
  ``H x W x 3``; ``defect_image`` also returns the 0/255 mask).
"""

from __future__ import annotations

import csv
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

DEFECT_KINDS = ("square", "bright", "dark")


def normal_image(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth RGB texture, values about 0.3..0.65, uint8 ``size x size x 3``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * (2 * x + y) + phase)
    base = np.array([0.5, 0.45, 0.4])
    img = base[None, None, :] + 0.1 * wave[..., None] * np.array([1.0, 0.8, 0.6])[None, None, :]
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def defect_image(
    size: int, rng: np.random.Generator, kind: str = "square"
) -> tuple[np.ndarray, np.ndarray]:
    """A normal image with a pasted square; ``kind`` "bright", "dark" or "square" (either,
    at random). Returns ``(image uint8 H x W x 3, mask uint8 H x W in {0, 255})``."""
    if kind not in DEFECT_KINDS:
        raise ValueError(f"defect must be one of {DEFECT_KINDS}, got {kind!r}")
    img = normal_image(size, rng)
    side = max(2, size // 4)
    top, left = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    bright = rng.random() < 0.5 if kind == "square" else kind == "bright"
    img[top : top + side, left : left + side] = 255 if bright else 0
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[top : top + side, left : left + side] = 255
    return img, mask


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_mvtec_tree(
    root: str | Path,
    category: str = "bottle",
    n_train: int = 8,
    n_good_test: int = 4,
    defects: dict[str, int] | None = None,
    size: int = 64,
    defect: str = "square",
    seed: int = 0,
) -> Path:
    """Write ``root/category/{train/good, test/<good|defect>, ground_truth/<defect>}``."""
    root = Path(root)
    defects = {"scratch": 4} if defects is None else defects
    rng = np.random.default_rng(seed)
    cat = root / category
    for i in range(n_train):
        _save(cat / "train" / "good" / f"{i:03d}.png", normal_image(size, rng))
    for i in range(n_good_test):
        _save(cat / "test" / "good" / f"{i:03d}.png", normal_image(size, rng))
    for name, n in defects.items():
        for i in range(n):
            img, mask = defect_image(size, rng, defect)
            _save(cat / "test" / name / f"{i:03d}.png", img)
            _save(cat / "ground_truth" / name / f"{i:03d}_mask.png", mask)
    return root


def make_folder_tree(
    root: str | Path,
    n_normal: int = 10,
    abnormal: int | dict[str, int] = 4,
    size: int = 64,
    masks: bool = False,
    mask_suffix: str = "_mask",
    seed: int = 0,
) -> dict[str, Path | None]:
    """Write ``root/normal``, ``root/abnormal`` and (``masks=True``) ``root/masks``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(n_normal):
        _save(root / "normal" / f"n{i:03d}.png", normal_image(size, rng))
    groups = {"": abnormal} if isinstance(abnormal, int) else dict(abnormal)
    for sub, n in groups.items():
        for i in range(n):
            img, mask = defect_image(size, rng)
            stem = f"a{i:03d}"
            _save(root / "abnormal" / sub / f"{stem}.png", img)
            if masks:
                _save(root / "masks" / sub / f"{stem}{mask_suffix}.png", mask)
    return {
        "normal_dir": root / "normal",
        "abnormal_dir": root / "abnormal",
        "mask_dir": root / "masks" if masks else None,
    }


def make_class_folder_tree(
    root: str | Path,
    classes: tuple[str, ...] | list[str] = ("normal", "abnormal"),
    n_per_class: int = 4,
    size: int = 32,
    seed: int = 0,
) -> Path:
    """Write ``root/<class>/<i>.png``, ``n_per_class`` per class, each class distinct."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) / size
    for k, name in enumerate(classes):
        angle = np.pi * k / max(1, len(classes))
        colour = np.array([0.2 + 0.6 * ((k * 0.37) % 1), 0.5, 0.8 - 0.6 * ((k * 0.37) % 1)])
        for i in range(n_per_class):
            phase = rng.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * 3 * (np.cos(angle) * x + np.sin(angle) * y) + phase)
            img = colour[None, None, :] * (0.75 + 0.25 * wave[..., None])
            _save(
                root / name / f"{i:03d}.png", np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
            )
    return root


CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")


def class_level(k: int) -> int:
    """Gray level of every image of class ``k`` (0..9) in the torchvision-layout helpers."""
    return 20 + 20 * k


def _coded_images(counts: list[int], size: int, rng: np.random.Generator):
    """``(images uint8 N x size x size, labels)``: class k's images at ``class_level(k)``, their
    first pixel the image's number within the class, classes interleaved in a seeded order."""
    labels = np.repeat(np.arange(len(counts)), counts)
    images = np.empty((len(labels), size, size), dtype=np.uint8)
    number = np.zeros(len(counts), dtype=int)
    for j, k in enumerate(labels):
        images[j] = class_level(int(k))
        images[j, 0, 0] = number[k] % 256
        number[k] += 1
    order = rng.permutation(len(labels))
    return images[order], labels[order].astype(np.uint8)


def _per_class(n: int | list[int], classes: int = 10) -> list[int]:
    return [n] * classes if isinstance(n, int) else list(n)


def make_mnist_raw(
    root: str | Path,
    folder: str = "MNIST",
    n_train_per_class: int | list[int] = 6,
    n_test_per_class: int | list[int] = 4,
    size: int = 28,
    seed: int = 0,
) -> Path:
    """Write ten classes as uncompressed idx files where torchvision's MNIST reads them."""
    root = Path(root)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train_per_class), ("t10k", n_test_per_class)):
        images, labels = _coded_images(_per_class(n), size, rng)
        header = struct.pack(">IIII", 0x0803, len(images), size, size)  # ubyte, 3 dims
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        header = struct.pack(">II", 0x0801, len(labels))  # ubyte, 1 dim
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
    return root


def make_cifar10_batches(
    root: str | Path,
    n_train_per_class: int | list[int] = 5,
    n_test_per_class: int | list[int] = 3,
    seed: int = 0,
) -> Path:
    """Write ten 32x32 RGB classes as CIFAR-10's pickled python batches."""
    root = Path(root)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def rgb(gray: np.ndarray) -> np.ndarray:  # N x 32 x 32 -> N x 3072, channel-major rows
        planes = [gray, 255 - gray, np.full_like(gray, 128)]
        return np.stack(planes, axis=1).reshape(len(gray), -1)

    def dump(name: str, images: np.ndarray, labels: np.ndarray) -> None:
        entry = {"data": rgb(images), "labels": [int(x) for x in labels]}
        (base / name).write_bytes(pickle.dumps(entry))

    images, labels = _coded_images(_per_class(n_train_per_class), 32, rng)
    for b, part in enumerate(np.array_split(np.arange(len(labels)), 5)):
        dump(f"data_batch_{b + 1}", images[part], labels[part])
    dump("test_batch", *_coded_images(_per_class(n_test_per_class), 32, rng))
    (base / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_NAMES)}))
    return root


HAM_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
HAM10000_DIAGNOSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")


def image_of_label(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    return normal_image(size, rng) if label == 0 else defect_image(size, rng)[0]


def make_ham10000_tree(root: Path, counts: dict[str, int] | None = None, size: int = 32,
                       seed: int = 0) -> Path:
    """The official layout: metadata CSV with the release's columns, images alternating
    between the two part folders (so both are searched)."""
    counts = counts or {d: (10 if d == "nv" else 4) for d in HAM10000_DIAGNOSES}
    rng = np.random.default_rng(seed)
    rows, n = [], 0
    for dx, count in counts.items():
        for _ in range(count):
            image_id = f"ISIC_{24306 + n:07d}"
            part = "HAM10000_images_part_1" if n % 2 == 0 else "HAM10000_images_part_2"
            _save(root / part / f"{image_id}.jpg", image_of_label(dx != "nv", rng, size))
            rows.append([f"HAM_{n // 2:07d}", image_id, dx, "histo", "45.0", "male", "back"])
            n += 1
    with open(root / "HAM10000_metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([HAM_COLUMNS, *rows])
    return root


def make_driving_tree(root: Path, drivers: int = 5, per_behaviour: int = 2, size: int = 32,
                      behaviours=("normal", "talking", "texting", "GPS"), seed: int = 0) -> Path:
    """``root/<behaviour>/<driver>/<i>.jpg``; normal images twice as many."""
    rng = np.random.default_rng(seed)
    for behaviour in behaviours:
        count = per_behaviour * (2 if behaviour == "normal" else 1)
        for d in range(drivers):
            for i in range(count):
                _save(root / behaviour / f"p{d:03d}" / f"{i}.jpg",
                      image_of_label(behaviour != "normal", rng, size))
    return root
