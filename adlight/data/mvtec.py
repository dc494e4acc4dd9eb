"""MVTec AD (Bergmann et al., CVPR 2019) and any category folder in its layout.

Layout (as the official archive extracts)::

    root/<category>/train/good/*.png
    root/<category>/test/<good|defect>/*.png
    root/<category>/ground_truth/<defect>/<name>_mask.png

Also read, with the same split policy: MVTec 3D-AD (``train/good/rgb/*.png``,
``test/<defect>/rgb/*.png`` with masks of the same name in ``test/<defect>/gt/``; the ``xyz``
point clouds are not used), MVTec AD 2 (``test_public/{good,bad}`` with masks in
``test_public/ground_truth/bad/<name>_mask.png``; its unlabelled ``test_private*`` folders are
not used), a converted VisA category (masks named like their image) and your own part.

Image-level categories: a category with no ``ground_truth/`` folder at all (neither beside
``test`` nor inside it, and not the 3D-AD layout) has no masks: it runs with image metrics only,
and says so once at setup (:attr:`MVTecDataModule.pixel_metrics_note`). A category that has
``ground_truth/`` but lacks one anomalous image's mask is still an error (``docs/bad_input.md``).

Non-square images: ``image_size: [height, width]`` resizes to that shape (KolektorSDD's
256 x 640 surfaces as ``[640, 256]``); an int resizes to a square.

Splits: train = ``train/good``. The test images are split, seeded and stratified per defect
type (``good`` included), into a validation part (``val_fraction``, used to choose thresholds)
and the test part; the validation images are removed from the test split, so thresholds never
see a test image. The official ``validation/good`` folders of 3D-AD and AD 2 are not used.
``class_names = ["good", <defects sorted>]``.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info

from adlight.checks import check_fraction
from adlight.data.base import AnomalyDataModule, SplitDatasets
from adlight.data.datasets import Sample
from adlight.data.image_tensors import list_images
from adlight.data.masks import check_masks
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
        category: the category folder's name: one of :data:`MVTEC_CATEGORIES` (the ones
            ``download`` can fetch) or any other folder in the layout above.
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
        image_size: int | tuple[int, int] = 256,
        channels: int = 3,
        val_fraction: float = 0.25,
        abnormal_train_fraction: float = 0.0,
        download: bool = False,
        url: str = MVTEC_URL,
        **kwargs,
    ) -> None:
        super().__init__(image_size=image_size, channels=channels, **kwargs)
        if not isinstance(category, str) or not category.strip():
            raise DataError(f"category must be the name of a category folder, got {category!r}")
        if Path(category).name != category or category == "..":  # "bottle/train" would read <root>/bottle/train/train/good
            raise DataError(f"category must be one folder name under root, not a path, got {category!r}")
        self.root = Path(root)
        self.category = category
        self.val_fraction = check_fraction("val_fraction", val_fraction, error=DataError)
        self.abnormal_train_fraction = check_abnormal_train_fraction(abnormal_train_fraction)
        self.download = bool(download)
        self.url = url

    @property
    def category_dir(self) -> Path:
        return self.root / self.category

    @property
    def has_masks(self) -> bool:
        """Whether the category has masks: a ``ground_truth/`` folder (beside ``test`` or in
        it) or the 3D-AD layout. Without one it is an image-level category."""
        return bool(self._rgb_subfolder) or (self.category_dir / "ground_truth").is_dir() \
            or (self._test_dir / "ground_truth").is_dir()

    @property
    def pixel_metrics_note(self) -> str | None:
        """Why this run has no pixel metrics (``None`` when the category has masks)."""
        if not self.category_dir.is_dir() or self.has_masks:
            return None
        return (f"image metrics only: {self.category_dir} has no ground_truth/ folder "
                "(an image-level category), so there are no pixel metrics")

    def prepare_data(self) -> None:
        """Download and extract ``url`` into ``root`` when asked and the category is missing."""
        if self.download and not self.category_dir.is_dir():
            self._download()

    @property
    def _test_dir(self) -> Path:
        """``test``, or MVTec AD 2's labelled ``test_public``."""
        public = self.category_dir / "test_public"
        return public if public.is_dir() and not (self.category_dir / "test").is_dir() \
            else self.category_dir / "test"

    @property
    def _rgb_subfolder(self) -> str:
        """``"rgb"`` in the MVTec 3D-AD layout (images in ``<split>/<defect>/rgb``), else ``""``."""
        return "rgb" if (self.category_dir / "train" / "good" / "rgb").is_dir() else ""

    def _download(self) -> None:
        """Fetch (http/https) or take (``file://`` URL or plain path) the archive and extract it.

        torchvision's downloader cannot read ``file://`` URLs, so a local archive is extracted
        in place (and kept); a downloaded one is removed after extraction.
        """
        from urllib.parse import unquote, urlparse

        from torchvision.datasets.utils import download_and_extract_archive, extract_archive

        if self.category not in MVTEC_CATEGORIES:
            raise DataError(
                f"category {self.category!r}: download fetches only the MVTec AD categories "
                f"({', '.join(MVTEC_CATEGORIES)}); {self.category_dir} must exist for any other"
            )
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
        if self.root.is_file():
            raise DataError(f"MVTec AD root {self.root} is a file, not a folder; extract it and set root "
                            "to the folder holding the category folders")
        if not self.root.is_dir():
            raise DataError(
                f"MVTec AD root {self.root} does not exist; pass download=True to fetch the "
                f"dataset from {self.url}, or set root to the folder holding the category folders"
            )
        if not self.category_dir.is_dir() and (self.root / "train" / "good").is_dir():
            raise DataError(
                f"category folder {self.category_dir} does not exist, and root {self.root} "
                f"looks like a category folder itself; set root to {self.root.parent} and "
                f"category to {self.root.name!r}"
            )
        if not self.category_dir.is_dir():
            present = sorted(p.name for p in self.root.iterdir()
                             if p.is_dir() and not p.name.startswith("."))
            close = difflib.get_close_matches(self.category, present, n=3)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            fetch = ("pass download=True to fetch the dataset" if self.category in MVTEC_CATEGORIES
                     else "download fetches only the 15 MVTec AD categories")
            raise DataError(
                f"category folder {self.category_dir} does not exist; {hint}folders in "
                f"{self.root}: {', '.join(present) or 'none'}; {fetch}"
            )
        for sub in (self.category_dir / "train" / "good", self._test_dir):
            if not sub.is_dir():
                raise DataError(
                    f"{sub} does not exist; expected the MVTec AD layout "
                    "<root>/<category>/train/good, <root>/<category>/test/<defect> "
                    "(or MVTec AD 2's test_public/<good|bad>)"
                )

    def _mask_of(self, image: Path, defect: str) -> Path:
        """The mask of an anomalous test image, in whichever of the layouts' places it is.

        Any image extension, in any case: ``<stem>_mask.*`` (MVTec AD, AD 2) or ``<stem>.*``
        (converted VisA; 3D-AD's ``gt`` folder beside the ``rgb`` one).
        """
        if self._rgb_subfolder:
            folders = [image.parent.parent / "gt"]
        else:
            folders = [self.category_dir / "ground_truth" / defect,
                       self._test_dir / "ground_truth" / defect]
        for folder in folders:
            by_stem = self._masks_in(folder)
            for stem in (f"{image.stem}_mask", image.stem):
                if stem in by_stem:
                    return by_stem[stem]
        expected = folders[0] / (image.name if self._rgb_subfolder else f"{image.stem}_mask.png")
        raise DataError(f"anomalous test image {image} has no mask: expected {expected}")

    def _masks_in(self, folder: Path) -> dict[str, Path]:
        """Image files directly in ``folder`` by stem (listed once per folder)."""
        if folder not in self._mask_index:
            self._mask_index[folder] = {p.stem: p for p in (
                list_images(folder, recursive=False) if folder.is_dir() else [])}
        return self._mask_index[folder]

    def _images(self, folder: Path) -> list[Path]:
        return list_images(folder / self._rgb_subfolder) if (folder / self._rgb_subfolder).is_dir() else []

    def _build_splits(self) -> SplitDatasets:
        self._check_layout()
        self._mask_index: dict[Path, dict[str, Path]] = {}
        train_dir = self.category_dir / "train" / "good"
        train_files = self._images(train_dir)
        if not train_files:
            raise DataError(f"{train_dir / self._rgb_subfolder} holds no images")
        test_dirs = sorted(
            p for p in self._test_dir.iterdir()
            if p.is_dir() and not p.name.startswith(".") and p.name != "ground_truth"
        )
        defects = [p.name for p in test_dirs if p.name != "good"]
        class_names = ["good", *defects]
        has_masks = self.has_masks
        if not has_masks:
            rank_zero_info(f"{type(self).__name__}: {self.pixel_metrics_note}")
        pool: list[Sample] = []
        for d in test_dirs:
            cid = class_names.index(d.name)
            for f in self._images(d):
                if d.name == "good":
                    pool.append(Sample(str(f), 0, cid))
                else:
                    mask = str(self._mask_of(f, d.name)) if has_masks else None
                    pool.append(Sample(str(f), 1, cid, mask))
        if not pool:
            raise DataError(f"{self._test_dir} holds no images")
        if has_masks:
            check_masks(pool)
        train = [Sample(str(f), 0, 0) for f in train_files]
        train, val, test = test_derived_validation(
            train, pool, self.val_fraction, self.abnormal_train_fraction, self.seed
        )
        return self._file_splits(train, val, test, class_names, has_masks=has_masks)
