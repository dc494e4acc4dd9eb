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
- ``normal_image(size, rng)`` / ``defect_image(size, rng, kind)``: the arrays (uint8
  ``H x W x 3``; ``defect_image`` also returns the 0/255 mask).
"""

from __future__ import annotations

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
