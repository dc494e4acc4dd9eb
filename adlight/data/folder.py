"""User data laid out as folders of images.

::

    normal_dir/**/*.png                     normal images (any depth)
    abnormal_dir/*.png                      anomalies of class "abnormal", and/or
    abnormal_dir/<class>/**/*.png           anomalies of class <class>
    mask_dir/[<class>/]<stem><mask_suffix>.<ext>   optional masks of the anomalies

Splits (all seeded): the normals are split into train and ``normal_test_fraction`` held-out
normals; the held-out normals and the anomalies are split, stratified per class, into val
(``val_fraction``) and test, which never overlap. Train holds normals only unless
``abnormal_train_fraction`` moves some anomalies there (supervised families).
"""

from __future__ import annotations

import re
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_warn

from adlight.checks import check_fraction
from adlight.data.base import AnomalyDataModule, SplitDatasets
from adlight.data.datasets import Sample
from adlight.data.image_tensors import IMAGE_EXTENSIONS, list_images
from adlight.data.masks import check_masks
from adlight.data.splits import check_abnormal_train_fraction
from adlight.data.splits.fractions import hold_out_normals, test_derived_validation
from adlight.errors import DataError

# "mask"/"masks" as a word of a file or folder name (000_mask.png, masks/, mask3.png), not
# inside another word (facemask.png, unmasked.png); ground-truth folders by their usual names
_MASK_NAME = re.compile(r"(^|[^a-z])masks?([^a-z]|$)")
_MASK_FOLDERS = {"ground_truth", "groundtruth", "gt"}

NORMAL_CLASS = "normal"
ABNORMAL_CLASS = "abnormal"


class FolderDataModule(AnomalyDataModule):
    """Anomaly detection on your own folders of images.

    Args:
        normal_dir: folder of normal images (searched recursively).
        abnormal_dir: optional folder of anomalies: images directly in it are class
            ``"abnormal"``, images in a sub-folder are the class named by the sub-folder.
            ``class_names = ["normal", ("abnormal",) <sub-folders sorted>]``.
        mask_dir: optional folder of anomaly masks; when given, every anomaly needs one and
            every batch carries ``mask`` (zeros for normals). The mask of
            ``abnormal_dir/<sub>/<stem>.<ext>`` is ``<stem><mask_suffix>.<any image ext>`` in
            ``mask_dir/<sub>/``, or else directly in ``mask_dir``.
        mask_suffix: appended to the image's stem to name its mask (e.g. ``"_mask"``).
        normal_test_fraction: share of the normals held out of training for val and test.
        val_fraction: share of each class of the held-out images that goes to val (0: no val).
        abnormal_train_fraction: share of each anomaly class moved into train (supervised
            families); 0 keeps train normal-only.
    """

    def __init__(
        self,
        normal_dir: str,
        abnormal_dir: str | None = None,
        mask_dir: str | None = None,
        mask_suffix: str = "",
        normal_test_fraction: float = 0.2,
        val_fraction: float = 0.25,
        abnormal_train_fraction: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.normal_dir = Path(normal_dir)
        self.abnormal_dir = None if abnormal_dir is None else Path(abnormal_dir)
        self.mask_dir = None if mask_dir is None else Path(mask_dir)
        if self.mask_dir is not None and self.abnormal_dir is None:
            raise DataError(f"mask_dir {self.mask_dir} is given but abnormal_dir is not")
        self.mask_suffix = mask_suffix
        self.normal_test_fraction = check_fraction("normal_test_fraction", normal_test_fraction, error=DataError)
        self.val_fraction = check_fraction("val_fraction", val_fraction, error=DataError)
        self.abnormal_train_fraction = check_abnormal_train_fraction(abnormal_train_fraction)

    def _list(self, folder: Path, arg: str) -> list[Path]:
        return list_images(folder, argument=arg, required=True)

    def _warn_mask_like_normals(self, normals: list[Path]) -> None:
        """Warn when files named like masks sit among the normals: they would train as images."""
        def mask_like(f: Path) -> bool:
            rel = f.relative_to(self.normal_dir)
            folders = [p.lower() for p in rel.parts[:-1]]
            stem = f.stem.lower()
            return (bool(_MASK_NAME.search(stem)) or any(_MASK_NAME.search(p) for p in folders)
                    or bool(_MASK_FOLDERS & set(folders))
                    or (bool(self.mask_suffix) and f.stem.endswith(self.mask_suffix)))

        found = [f for f in normals if mask_like(f)]
        if found:
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            rank_zero_warn(
                f"normal_dir {self.normal_dir}: {found[0]}{more} is named like a mask but is "
                "used as a normal training image; move masks into mask_dir"
            )

    def _find_masks(self, abnormal: list[tuple[Path, Path]]) -> dict[Path, Path]:
        """Mask of every anomaly, keyed by image path; DataError naming the first one missing."""
        assert self.mask_dir is not None and self.abnormal_dir is not None
        if not self.mask_dir.is_dir():
            raise DataError(f"mask_dir {self.mask_dir} does not exist or is not a directory")
        index: dict[tuple[Path, str], Path] = {}
        for m in list_images(self.mask_dir):
            index.setdefault((m.parent.relative_to(self.mask_dir), m.stem), m)
        found = {}
        for f, rel in abnormal:
            stem = f.stem + self.mask_suffix
            mask = index.get((rel.parent, stem)) or index.get((Path("."), stem))
            if mask is None:
                expected = self.mask_dir / rel.parent / f"{stem}.png"
                raise DataError(
                    f"abnormal image {f} has no mask: expected {expected} (any of "
                    f"{', '.join(IMAGE_EXTENSIONS)}) or {self.mask_dir / stem}.png; every "
                    "abnormal image needs a mask when mask_dir is given"
                )
            found[f] = mask
        return found

    def _build_splits(self) -> SplitDatasets:
        normals = self._list(self.normal_dir, "normal_dir")
        self._warn_mask_like_normals(normals)
        class_names = [NORMAL_CLASS]
        abnormal: list[tuple[Path, Path]] = []  # (file, path relative to abnormal_dir)
        if self.abnormal_dir is not None:
            files = self._list(self.abnormal_dir, "abnormal_dir")
            overlap = sorted(set(files) & set(normals))
            if overlap:
                raise DataError(
                    f"{overlap[0]} (and {len(overlap) - 1} more) is under both normal_dir "
                    f"{self.normal_dir} and abnormal_dir {self.abnormal_dir}"
                )
            abnormal = [(f, f.relative_to(self.abnormal_dir)) for f in files]
            direct = any(len(rel.parts) == 1 for _, rel in abnormal)
            subs = sorted({rel.parts[0] for _, rel in abnormal if len(rel.parts) > 1})
            if NORMAL_CLASS in subs:
                raise DataError(
                    f"abnormal_dir {self.abnormal_dir} has a sub-folder named {NORMAL_CLASS!r}, "
                    "which is the name of the normal class; rename it"
                )
            class_names += (
                [ABNORMAL_CLASS] if direct and ABNORMAL_CLASS not in subs else []
            ) + subs
        masks = self._find_masks(abnormal) if self.mask_dir is not None else {}

        train, pool = hold_out_normals(
            [Sample(str(f), 0, 0) for f in normals], self.normal_test_fraction, self.seed
        )
        for f, rel in abnormal:
            name = rel.parts[0] if len(rel.parts) > 1 else ABNORMAL_CLASS
            m = masks.get(f)
            pool.append(Sample(str(f), 1, class_names.index(name), None if m is None else str(m)))
        check_masks(pool)
        train, val, test = test_derived_validation(
            train, pool, self.val_fraction, self.abnormal_train_fraction, self.seed
        )
        return self._file_splits(train, val, test, class_names,
                                 has_masks=self.mask_dir is not None)
