"""MVTec AD (Bergmann et al., CVPR 2019), one category at a time.

Layout (as the official archive extracts)::

    root/<category>/train/good/*.png
    root/<category>/test/<good|defect>/*.png
    root/<category>/ground_truth/<defect>/<name>_mask.png

Splits: train = ``train/good``. The test images are split, seeded and stratified per defect
type (``good`` included), into a validation part (``val_fraction``, used to choose thresholds)
and the test part; the validation images are removed from the test split, so thresholds never
see a test image. ``class_names = ["good", <defects sorted>]``.
"""

from __future__ import annotations

from pathlib import Path

from adlight.checks import check_fraction
from adlight.data.base import AnomalyDataModule, SplitDatasets
from adlight.data.datasets import Sample, check_mask_sizes
from adlight.data.images import list_images
from adlight.data.splits import check_abnormal_train_fraction
from adlight.data.splits.fractions import test_derived_validation
from adlight.errors import DataError

MVTEC_CATEGORIES: tuple[str, ...] = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)

#: The official archive of all 15 categories (about 4.9 GB), from mvtec.com's download page.
MVTEC_URL = (
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
    "420938113-1629952094/mvtec_anomaly_detection.tar.xz"
)


class MVTecDataModule(AnomalyDataModule):
    """One MVTec AD category.

    Args:
        root: folder holding the category folders (``root/<category>/train/good``).
        category: one of :data:`MVTEC_CATEGORIES`.
        val_fraction: share of each test defect type (and of the good test images) moved into
            the validation split; 0 means no validation split.
        abnormal_train_fraction: share of each defect type moved from test into train, for
            supervised families; 0 (default) keeps train normal-only.
        download: fetch and extract ``url`` into ``root`` when ``root/<category>`` is missing
            (in ``prepare_data``, or in ``setup`` when used without a Trainer).
        url: archive to download; the default is the official one with all categories. A
            ``file://`` URL or a plain path extracts an archive you already have.
    """

    def __init__(
        self,
        root: str,
        category: str = "bottle",
        image_size: int = 256,
        channels: int = 3,
        val_fraction: float = 0.25,
        abnormal_train_fraction: float = 0.0,
        download: bool = False,
        url: str = MVTEC_URL,
        **kwargs,
    ) -> None:
        super().__init__(image_size=image_size, channels=channels, **kwargs)
        if category not in MVTEC_CATEGORIES:
            raise DataError(
                f"unknown MVTec AD category {category!r}; valid categories: {', '.join(MVTEC_CATEGORIES)}"
            )
        self.root = Path(root)
        self.category = category
        self.val_fraction = check_fraction("val_fraction", val_fraction, error=DataError)
        self.abnormal_train_fraction = check_abnormal_train_fraction(abnormal_train_fraction)
        self.download = bool(download)
        self.url = url

    @property
    def category_dir(self) -> Path:
        return self.root / self.category

    def prepare_data(self) -> None:
        """Download and extract ``url`` into ``root`` when asked and the category is missing."""
        if self.download and not self.category_dir.is_dir():
            self._download()

    def _download(self) -> None:
        """Fetch (http/https) or take (``file://`` URL or plain path) the archive and extract it.

        torchvision's downloader cannot read ``file://`` URLs, so a local archive is extracted
        in place (and kept); a downloaded one is removed after extraction.
        """
        from urllib.parse import unquote, urlparse

        from torchvision.datasets.utils import download_and_extract_archive, extract_archive

        self.root.mkdir(parents=True, exist_ok=True)
        parsed = urlparse(self.url)
        local = None
        if parsed.scheme == "file":
            local = Path(unquote(parsed.path))
        elif parsed.scheme == "" or len(parsed.scheme) == 1:  # a path (or C:\...)
            local = Path(self.url)
        try:
            if local is not None:
                if not local.is_file():
                    raise FileNotFoundError(f"no archive at {local}")
                extract_archive(str(local), str(self.root))
            else:
                download_and_extract_archive(
                    self.url, download_root=str(self.root), remove_finished=True
                )
        except Exception as e:  # network, disk and archive errors all end here
            raise DataError(
                f"could not download and extract MVTec AD from {self.url} into {self.root}: "
                f"{type(e).__name__}: {e}"
            ) from e
        if not self.category_dir.is_dir():
            raise DataError(
                f"extracted {self.url} into {self.root}, but {self.category_dir} still does not "
                "exist; the archive does not hold this category at its top level"
            )

    def _check_layout(self) -> None:
        if not self.category_dir.is_dir() and self.download:
            self._download()  # setup() without prepare_data(), e.g. outside a Trainer
        if not self.root.is_dir():
            raise DataError(
                f"MVTec AD root {self.root} does not exist; pass download=True to fetch the "
                f"dataset from {self.url}, or set root to the folder holding the category folders"
            )
        if not self.category_dir.is_dir():
            present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise DataError(
                f"MVTec AD category folder {self.category_dir} does not exist (folders in "
                f"{self.root}: {present or 'none'}); pass download=True to fetch the dataset"
            )
        for sub in ("train/good", "test"):
            if not (self.category_dir / sub).is_dir():
                raise DataError(
                    f"{self.category_dir / sub} does not exist; expected the MVTec AD layout "
                    "<root>/<category>/train/good, <root>/<category>/test/<defect>"
                )

    def _build_splits(self) -> SplitDatasets:
        self._check_layout()
        cat = self.category_dir
        train_files = list_images(cat / "train" / "good")
        if not train_files:
            raise DataError(f"{cat / 'train' / 'good'} holds no images")
        test_dirs = sorted(
            p for p in (cat / "test").iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        defects = [p.name for p in test_dirs if p.name != "good"]
        class_names = ["good", *defects]
        pool: list[Sample] = []
        for d in test_dirs:
            cid = class_names.index(d.name)
            for f in list_images(d):
                if d.name == "good":
                    pool.append(Sample(str(f), 0, cid))
                    continue
                mask = cat / "ground_truth" / d.name / f"{f.stem}_mask.png"
                if not mask.is_file():
                    raise DataError(f"anomalous test image {f} has no mask: expected {mask}")
                pool.append(Sample(str(f), 1, cid, str(mask)))
        if not pool:
            raise DataError(f"{cat / 'test'} holds no images")
        check_mask_sizes(pool)
        train = [Sample(str(f), 0, 0) for f in train_files]
        train, val, test = test_derived_validation(
            train, pool, self.val_fraction, self.abnormal_train_fraction, self.seed
        )
        return self._file_splits(train, val, test, class_names, has_masks=True)
