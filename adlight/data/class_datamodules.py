"""Anomaly detection made by class from a labelled image set: some classes normal, others not.

Two protocols, one datamodule each, over the same sources (:mod:`adlight.data.sources`):
:class:`OneVsRestDataModule` (Minhas & Zelek) and :class:`OneClassDataModule` (Andrews et al.).
The draws themselves are :mod:`adlight.data.splits.class_draws`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adlight.checks import check_fraction, check_int, is_int
from adlight.data.base import AnomalyDataModule, SplitDatasets
from adlight.data.sources import (
    SOURCES,
    TORCHVISION_SOURCES,
    ClassPool,
    load_source,
    open_torchvision,
)
from adlight.data.splits.class_draws import ClassDraw, Drawer
from adlight.errors import DataError

ClassSpec = int | str


class ClassSplitBase(AnomalyDataModule):
    """What both class protocols share: the source, which classes are normal, the trial.

    Args:
        source: ``mnist``, ``fashion_mnist``, ``cifar10`` (torchvision, under ``root``, official
            train and test sets), ``folder`` (``root/<class>/**/<image>``) or ``digits``
            (scikit-learn's bundled digits, no ``root``).
        root: the torchvision root or the class-folder tree.
        normal_classes: class names or indices that are normal; default every class not in
            ``anomaly_classes``. An int that is also a class's name means that class.
        anomaly_classes: the anomalous ones; default every class not in ``normal_classes``.
        trial: which training draw (0, 1, 2, ...): trials share test and val, not training.
        test_root: ``folder`` only: the same class folders for the test images.
        download: torchvision sources only: fetch the dataset into ``root`` when missing.

    ``class_id`` is the image's class in ``class_names`` (results per class);
    ``normal_class_ids`` lists the normal ones. A draw short of images warns and is recorded
    in ``shortfalls`` and ``split_counts()``; only an empty part is an error.
    """

    def __init__(
        self,
        source: str,
        root: str | None = None,
        normal_classes: Sequence[ClassSpec] | ClassSpec | None = None,
        anomaly_classes: Sequence[ClassSpec] | ClassSpec | None = None,
        trial: int = 0,
        test_root: str | None = None,
        download: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if source not in SOURCES:
            raise DataError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        self.source = source
        self._check_paths(root, test_root, download)
        self.root = None if root is None else str(root)
        self.test_root = None if test_root is None else str(test_root)
        self.download = bool(download)
        self.normal_classes = _class_list("normal_classes", normal_classes)
        self.anomaly_classes = _class_list("anomaly_classes", anomaly_classes)
        if not self.normal_classes and not self.anomaly_classes:
            raise DataError(
                "give normal_classes or anomaly_classes (or both); the one left out means "
                "every other class"
            )
        both = [c for c in self.normal_classes if c in self.anomaly_classes]
        if both:
            raise DataError(f"normal_classes and anomaly_classes both list {both}")
        self.trial = check_int("trial", trial, 0, DataError)
        self.shortfalls: dict[str, dict] = {}
        self._normal_ids: list[int] = []
        self._anomaly_ids: list[int] = []

    def _draw_parts(self, draw: ClassDraw, train: Drawer, test: Drawer):
        """``(train, val, test)`` positions drawn by the protocol."""
        raise NotImplementedError

    def _check_paths(self, root, test_root, download) -> None:
        if self.source == "digits":
            if root is not None:
                raise DataError(
                    f"root is not used by source digits (bundled with scikit-learn), got {root!r}"
                )
        elif root is None:
            raise DataError(f"source {self.source} needs root (the folder that holds the data)")
        if test_root is not None and self.source != "folder":
            raise DataError(
                f"test_root applies to source folder only; {self.source} "
                + ("has its official test set" if self.source in TORCHVISION_SOURCES
                   else "has no separate test set")
            )
        if download and self.source not in TORCHVISION_SOURCES:
            raise DataError(
                f"download applies to sources {', '.join(TORCHVISION_SOURCES)} only, "
                f"not {self.source}"
            )

    # ----------------------------------------------------------------- public
    @property
    def normal_class_ids(self) -> list[int]:
        """``class_id`` of the normal classes, in ``class_names`` order."""
        self._ensure_splits()
        return list(self._normal_ids)

    @property
    def anomaly_class_ids(self) -> list[int]:
        """``class_id`` of the anomalous classes, in ``class_names`` order."""
        self._ensure_splits()
        return list(self._anomaly_ids)

    def split_counts(self) -> dict[str, dict[str, int]]:
        """The base counts plus ``normal_shortfall``/``anomalous_shortfall`` (asked - used)."""
        out = super().split_counts()
        for split, counts in out.items():
            for kind in ("normal", "anomalous"):
                short = self.shortfalls.get(f"{split}_{kind}")
                counts[f"{kind}_shortfall"] = short["asked"] - short["used"] if short else 0
        return out

    def prepare_data(self) -> None:
        """Download the torchvision dataset (once per node) when ``download`` is set."""
        if self.download:
            for train in (True, False):
                open_torchvision(self.source, Path(self.root), train, True)

    # ----------------------------------------------------------------- splits
    def _resolve(self, specs: list[ClassSpec], names: list[str], argument: str) -> list[int]:
        ids = []
        for spec in specs:
            # an int that is also a class's name means that class: the YAML parser turns a
            # quoted "3" into 3, so for folders named 1, 2, 3 the name is all a user can mean
            if isinstance(spec, int) and str(spec) not in names:
                if spec >= len(names):
                    raise DataError(
                        f"{argument}: class index {spec} is out of range; the {len(names)} "
                        f"classes are {names}"
                    )
                ids.append(spec)
            elif str(spec) in names:
                ids.append(names.index(str(spec)))
            elif spec in names:
                ids.append(names.index(spec))
            else:
                raise DataError(
                    f"{argument}: unknown class {spec!r}; available classes: {names}"
                )
        if len(set(ids)) != len(ids):
            raise DataError(f"{argument} names a class twice: {specs} -> {[names[i] for i in ids]}")
        return sorted(ids)

    def _resolve_classes(self, names: list[str]) -> None:
        normal = self._resolve(self.normal_classes, names, "normal_classes")
        anomaly = self._resolve(self.anomaly_classes, names, "anomaly_classes")
        if not normal:
            normal = [i for i in range(len(names)) if i not in anomaly]
        if not anomaly:
            anomaly = [i for i in range(len(names)) if i not in normal]
        both = sorted(set(normal) & set(anomaly))
        if both:
            raise DataError(
                f"normal_classes and anomaly_classes both name {[names[i] for i in both]}"
            )
        if not normal or not anomaly:
            empty = "normal_classes" if not normal else "anomaly_classes"
            raise DataError(f"no class is left for {empty}: the source has only {names}")
        self._normal_ids, self._anomaly_ids = normal, anomaly

    def _build_splits(self) -> SplitDatasets:
        data = load_source(self.source, self.root, self.test_root, self.download)
        names = data.class_names
        self._resolve_classes(names)
        draw = ClassDraw(names, self._normal_ids, self._anomaly_ids, self.seed, self.trial,
                         type(self).__name__)
        train_drawer = Drawer(data.train, len(names), self.seed, 0)
        test_drawer = (train_drawer if data.test is None
                       else Drawer(data.test, len(names), self.seed, 1))
        train, val, test = self._draw_parts(draw, train_drawer, test_drawer)
        self.shortfalls = draw.shortfalls
        anomalous = set(self._anomaly_ids)

        def make(pool: ClassPool, positions: list[int], augment):
            positions = sorted(positions)
            labels = [int(pool.targets[i] in anomalous) for i in positions]
            return pool.dataset(positions, labels, self.channels, self.image_size, augment,
                                self.cache_images)

        return SplitDatasets(
            train=make(data.train, train, None),  # augmented by batch (augment_batch)
            val=make(data.train, val, None) if val else None,
            test=make(test_drawer.pool, test, None),
            class_names=list(names),
        )


class OneVsRestDataModule(ClassSplitBase):
    """Minhas & Zelek: class(es) against a sample of the rest, both labels in training.

    Args:
        train_per_class: images of each anomalous class in the training draw (default: all
            the train pool has), with as many normals spread over the normal classes.
        test_per_class: test images of each anomalous class, and as many normals (default:
            all of the official test set; required when test images come from the train pool).
        val_fraction: share of the training draw (per label, even over its classes) that
            becomes the validation split.
        Everything else as :class:`ClassSplitBase`.

    The paper used 5000/1000 (CIFAR-10), 6000/1000 (MNIST), 2000/4000 (Concrete Crack).
    """

    def __init__(
        self,
        source: str,
        root: str | None = None,
        train_per_class: int | None = None,
        test_per_class: int | None = None,
        val_fraction: float = 0.1,
        **kwargs,
    ) -> None:
        super().__init__(source, root, **kwargs)
        self.train_per_class = _count("train_per_class", train_per_class, 1, optional=True)
        self.test_per_class = _count("test_per_class", test_per_class, 1, optional=True)
        self.val_fraction = check_fraction("val_fraction", val_fraction, error=DataError)

    def _draw_parts(self, draw: ClassDraw, train: Drawer, test: Drawer):
        if self.test_per_class is None and test is train:
            raise DataError(
                f"test_per_class must be set for source {self.source}"
                + (" without test_root" if self.source == "folder" else "")
                + ": its test images are drawn from the same images as training, so 'all of "
                "them' is not a choice"
            )
        return draw.one_vs_rest(train, test, self.train_per_class, self.test_per_class,
                                self.val_fraction)


class OneClassDataModule(ClassSplitBase):
    """Andrews et al.: train on normals only; fixed test counts; repeated trials.

    Args:
        n_train_normals: training normals (per ``trial`` a different draw).
        n_test_normals: unseen test normals.
        n_test_anomalies: test anomalies.
        n_val_normals: validation normals, from the train pool (0 with 0 anomalies: no val).
        n_val_anomalies: validation anomalies, from the train pool.
        Everything else as :class:`ClassSplitBase`.

    Their MNIST tasks: {5} vs {2}; {5} vs {0,2,4,6,8}; {1,3,5,7,9} vs {2};
    {1,3,5,7,9} vs {0,2,4,6,8}.
    """

    def __init__(
        self,
        source: str,
        root: str | None = None,
        n_train_normals: int = 2048,
        n_test_normals: int = 512,
        n_test_anomalies: int = 512,
        n_val_normals: int = 64,
        n_val_anomalies: int = 64,
        **kwargs,
    ) -> None:
        super().__init__(source, root, **kwargs)
        self.counts = {
            "n_train_normals": _count("n_train_normals", n_train_normals, 1),
            "n_test_normals": _count("n_test_normals", n_test_normals, 1),
            "n_test_anomalies": _count("n_test_anomalies", n_test_anomalies, 1),
            "n_val_normals": _count("n_val_normals", n_val_normals, 0),
            "n_val_anomalies": _count("n_val_anomalies", n_val_anomalies, 0),
        }

    def _draw_parts(self, draw: ClassDraw, train: Drawer, test: Drawer):
        return draw.one_class(train, test, self.counts)


def _class_list(argument: str, value) -> list[ClassSpec]:
    """``value`` as a list of class names / indices, or :class:`DataError` naming ``argument``."""
    if value is None:
        return []
    items = [value] if isinstance(value, (int, str)) else list(value)
    for item in items:
        ok = (is_int(item) and item >= 0) or (
            isinstance(item, str) and item != ""
        )
        if not ok:
            raise DataError(
                f"{argument} must be class names or non-negative class indices, got {item!r} "
                f"in {value!r}"
            )
    if len(set(items)) != len(items):
        raise DataError(f"{argument} lists a class twice: {items}")
    return items


def _count(name: str, value, minimum: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    return check_int(name, value, minimum, DataError)
