"""Anomaly detection made from a labelled image set: some classes normal, others anomalous."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn

from adlight.checks import check_fraction, check_int
from adlight.data.base import AnomalyDataModule, SplitDatasets
from adlight.data.sources import (
    SOURCES,
    TORCHVISION_SOURCES,
    ClassPool,
    load_source,
    open_torchvision,
)
from adlight.data.transforms import augmentation_transform
from adlight.errors import DataError

PROTOCOLS: tuple[str, ...] = ("one_vs_rest", "one_class")

ClassSpec = int | str

# defaults of the protocol-specific counts (the arguments default to None so that setting one
# under the other protocol is an error instead of being ignored)
ONE_VS_REST_VAL_FRACTION = 0.1
ONE_CLASS_COUNTS = {
    "n_train_normals": 2048,
    "n_test_normals": 512,
    "n_test_anomalies": 512,
    "n_val_normals": 64,
    "n_val_anomalies": 64,
}

_MASK64 = (1 << 64) - 1
# independent random streams: the fixed order test and validation images are taken in, the
# per-trial training draw, and the per-trial validation cut of one_vs_rest's training draw
_ORDER, _TRAIN, _VAL_CUT = 0, 1, 2


def _rng(seed: int, *stream: int) -> np.random.Generator:
    # SeedSequence wants non-negative words; the mask keeps negative seeds distinct
    return np.random.default_rng([seed & _MASK64, *stream])


def even_quota(asked: int, available: Sequence[int]) -> list[int]:
    """Split ``asked`` over classes as evenly as their ``available`` counts allow.

    Each class gets ``asked // k`` (the first ``asked % k`` one more); what a small class cannot
    give is spread over the others in the same way. The sum is ``min(asked, sum(available))``.
    """
    quota = [0] * len(available)
    open_ = [i for i, a in enumerate(available) if a > 0]
    left = asked
    while left > 0 and open_:
        share, extra = divmod(left, len(open_))
        for j, i in enumerate(open_):
            quota[i] += min(share + (j < extra), available[i] - quota[i])
        left = asked - sum(quota)
        open_ = [i for i in open_ if quota[i] < available[i]]
    return quota


class _Drawer:
    """Takes images of one pool class by class, never the same image twice.

    Test and validation images are taken from the front of a fixed, seeded order of each
    class (so they depend only on ``seed``); training images are a random sample, seeded by
    ``seed`` and ``trial``, of what is left.
    """

    def __init__(self, pool: ClassPool, n_classes: int, seed: int, pool_id: int) -> None:
        self.pool = pool
        self.seed = seed
        self.total = [len(m) for m in pool.by_class(n_classes)]
        self.left = [
            [m[j] for j in _rng(seed, _ORDER, pool_id, c).permutation(len(m))]
            for c, m in enumerate(pool.by_class(n_classes))
        ]

    def available(self, classes: Sequence[int]) -> list[int]:
        return [len(self.left[c]) for c in classes]

    def take(self, classes: Sequence[int], quota: Sequence[int], trial: int | None) -> list[int]:
        out = []
        for c, q in zip(classes, quota, strict=True):
            if trial is None:
                chosen = self.left[c][:q]
            else:
                pick = _rng(self.seed, _TRAIN, trial, c).permutation(len(self.left[c]))[:q]
                chosen = [self.left[c][j] for j in pick]
            taken = set(chosen)
            self.left[c] = [i for i in self.left[c] if i not in taken]
            out += chosen
        return out


@dataclass(frozen=True)
class _Part:
    """One part of one split: e.g. the test anomalies."""

    split: str  # train | val | test
    anomalous: bool
    argument: str  # the constructor argument that asks for it
    matches_anomalies: bool = False  # one_vs_rest's normals: as many as the anomalies drawn

    @property
    def key(self) -> str:
        return f"{self.split}_{'anomalous' if self.anomalous else 'normal'}"


class ClassSplitDataModule(AnomalyDataModule):
    """Anomaly detection splits made by class from a labelled image source.

    Some classes of the source are normal (``label`` 0), others anomalous (1); ``class_id`` is
    the image's original class in ``class_names``, so results can be given per class, and
    ``normal_class_ids`` lists the normal ones (targets for an auxiliary-task classifier). Give
    ``normal_classes`` or ``anomaly_classes`` (or both): the one left out is every other class.
    Classes are names (``"airplane"``, ``"5"``, ``"Positive"``) or int indices into
    ``class_names``; an int that is also a class's name (folders ``1/``, ``3/``) means that class.

    Sources (``source``):

    - ``mnist``, ``fashion_mnist``, ``cifar10``: ``torchvision.datasets`` under ``root``, their
      official train and test sets; fetched into ``root`` only with ``download: true``.
      ``class_names``: digits ``"0"``..``"9"``, torchvision's Fashion-MNIST and CIFAR-10 names.
    - ``folder``: ``root/<class>/**/<image>``, classes = sub-folders sorted by name (e.g. Concrete
      Crack's ``Negative/`` and ``Positive/``); with ``test_root`` (the same class folders) test
      images come from there, else from ``root``.
    - ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, no download).

    Protocols (``protocol``); every draw spreads its count evenly over the classes it draws
    from, filling up from the others where one class has too few:

    - ``one_vs_rest`` (Minhas & Zelek, supervised): ``train_per_class`` images of each
      anomalous class (default: all the train pool has) and as many normal images, a seeded
      random sample spread over the normal classes, form the training selection, which holds
      BOTH labels; a stratified ``val_fraction`` (default 0.1) of it becomes the validation
      split. The test split is ``test_per_class`` images of each anomalous class (default: all
      of the official test set; required when test images come from the train pool) and as
      many normals. The paper used 5000/1000 (CIFAR-10), 6000/1000 (MNIST), 2000/4000
      (Concrete Crack).
    - ``one_class`` (Andrews et al.): train holds ``n_train_normals`` (2048) normals only; test
      ``n_test_normals`` (512) unseen normals and ``n_test_anomalies`` (512); validation
      ``n_val_normals``/``n_val_anomalies`` (64/64, both 0: no validation), taken from the train
      pool. Their MNIST tasks: {5} vs {2}; {5} vs {0,2,4,6,8}; {1,3,5,7,9} vs {2};
      {1,3,5,7,9} vs {0,2,4,6,8}.

    Test images are drawn first, then validation, then training, all from ``seed`` alone except
    the training draw, which also depends on ``trial``: trials share one test and one validation
    set while their training images differ, never overlapping val or test. The same arguments
    give the same split on every process.

    When a source has fewer images than asked (digit 5 in the 10,000-image MNIST test set has
    892: 512 test normals leave 380 for training, not 2048), the split uses what there is, warns
    with the numbers and records them in ``shortfalls`` and ``split_counts()``; only a part
    that would be empty is a :class:`DataError`.

    Args:
        source: one of ``mnist``, ``fashion_mnist``, ``cifar10``, ``folder``, ``digits``.
        root: the torchvision root or the class-folder tree (not used by ``digits``).
        test_root: ``folder`` only: class folders of the official test set.
        download: torchvision sources only: fetch the dataset into ``root`` when missing.
        protocol: ``one_vs_rest`` or ``one_class``.
        normal_classes, anomaly_classes: class names or indices (one, or a list).
        train_per_class, test_per_class, val_fraction: ``one_vs_rest`` only (see above).
        n_train_normals, n_test_normals, n_test_anomalies, n_val_normals, n_val_anomalies:
            ``one_class`` only (see above).
        trial: which training draw (0, 1, 2, ...) of the repeated-trials protocol.
        rotation_degrees, hflip, vflip, noise_std: train-only augmentations.
        cache_images: keep decoded, resized image files in memory after their first read.
        image_size, channels, batch_size, num_workers, seed, predict_dir: as for every
            datamodule; images are [0, 1], resized to ``image_size`` (bilinear, antialiased),
            gray repeated to 3 channels or RGB converted to luminance.
    """

    def __init__(
        self,
        source: str,
        root: str | None = None,
        protocol: str = "one_class",
        normal_classes: Sequence[ClassSpec] | ClassSpec | None = None,
        anomaly_classes: Sequence[ClassSpec] | ClassSpec | None = None,
        train_per_class: int | None = None,
        test_per_class: int | None = None,
        val_fraction: float | None = None,
        n_train_normals: int | None = None,
        n_test_normals: int | None = None,
        n_test_anomalies: int | None = None,
        n_val_normals: int | None = None,
        n_val_anomalies: int | None = None,
        trial: int = 0,
        test_root: str | None = None,
        download: bool = False,
        image_size: int = 128,
        channels: int = 3,
        rotation_degrees: float = 0.0,
        hflip: bool = False,
        vflip: bool = False,
        noise_std: float = 0.0,
        cache_images: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, image_size, channels, seed, predict_dir)
        if source not in SOURCES:
            raise DataError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
        if protocol not in PROTOCOLS:
            raise DataError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        self.source = source
        self.protocol = protocol
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

        one_vs_rest = {"train_per_class": train_per_class, "test_per_class": test_per_class,
                       "val_fraction": val_fraction}
        one_class = {"n_train_normals": n_train_normals, "n_test_normals": n_test_normals,
                     "n_test_anomalies": n_test_anomalies, "n_val_normals": n_val_normals,
                     "n_val_anomalies": n_val_anomalies}
        other = one_class if protocol == "one_vs_rest" else one_vs_rest
        stray = [k for k, v in other.items() if v is not None]
        if stray:
            own = one_vs_rest if protocol == "one_vs_rest" else one_class
            raise DataError(
                f"{', '.join(stray)}: not an argument of protocol {protocol} (its own: "
                f"{', '.join(own)})"
            )
        self.train_per_class = _count("train_per_class", train_per_class, 1, optional=True)
        self.test_per_class = _count("test_per_class", test_per_class, 1, optional=True)
        self.val_fraction = check_fraction(
            "val_fraction", ONE_VS_REST_VAL_FRACTION if val_fraction is None else val_fraction,
            error=DataError,
        )
        counts = {k: ONE_CLASS_COUNTS[k] if v is None else v for k, v in one_class.items()}
        for k, v in counts.items():
            _count(k, v, 0 if k.startswith("n_val") else 1)
        self.n_train_normals = counts["n_train_normals"]
        self.n_test_normals = counts["n_test_normals"]
        self.n_test_anomalies = counts["n_test_anomalies"]
        self.n_val_normals = counts["n_val_normals"]
        self.n_val_anomalies = counts["n_val_anomalies"]
        self.trial = _count("trial", trial, 0)

        # images are resized (and cached) by the datasets; train only adds augmentations
        self._augment = augmentation_transform(rotation_degrees, hflip, vflip, noise_std)
        self.cache_images = bool(cache_images)
        self.shortfalls: dict[str, dict] = {}
        self._normal_ids: list[int] = []
        self._anomaly_ids: list[int] = []

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

    def _draw(
        self, drawer: _Drawer, part: _Part, asked: int | None, names: list[str],
        per_class: bool = False, trial: int | None = None,
    ) -> list[int]:
        """Take ``asked`` images (per class with ``per_class``; None: all left) for ``part``."""
        classes = self._anomaly_ids if part.anomalous else self._normal_ids
        avail = drawer.available(classes)
        if asked is None:
            quota, wanted = list(avail), sum(avail)
        elif per_class:
            quota, wanted = [min(asked, a) for a in avail], asked * len(classes)
        else:
            quota, wanted = even_quota(asked, avail), asked
        used = sum(quota)
        kind = "anomalous" if part.anomalous else "normal"
        what = (
            f"{part.split} wants as many normal images as anomalies ({asked}, {part.argument})"
            if part.matches_anomalies
            else f"{part.argument} asks for {asked}{' per class' if per_class else ''} "
            f"{part.split} {kind} images"
        ) + f" of classes {[names[c] for c in classes]}"
        held = sum(drawer.total[c] for c in classes)
        where = (
            f"{drawer.pool.name} holds {held} of them"
            + (f", {held - sum(avail)} of which went to earlier splits" if held > sum(avail) else "")
            + f" (per class: {dict(zip([names[c] for c in classes], avail, strict=True))} left)"
        )
        if used == 0:
            raise DataError(f"{what}, but none are left: {where}; the {part.split} split needs them")
        if used < wanted:
            self.shortfalls[part.key] = {
                "argument": part.argument, "asked": wanted, "available": sum(avail), "used": used,
            }
            rank_zero_warn(
                f"{type(self).__name__}: {what}{f' ({wanted} in all)' if per_class else ''}, "
                f"but only {sum(avail)} are "
                f"available: {where}. Using {used}."
            )
        return drawer.take(classes, quota, trial)

    def _build_splits(self) -> SplitDatasets:
        data = load_source(self.source, self.root, self.test_root, self.download)
        names = data.class_names
        self._resolve_classes(names)
        self.shortfalls = {}
        n = len(names)
        train_drawer = _Drawer(data.train, n, self.seed, 0)
        test_drawer = train_drawer if data.test is None else _Drawer(data.test, n, self.seed, 1)
        if self.protocol == "one_vs_rest":
            parts = self._one_vs_rest(train_drawer, test_drawer, names)
        else:
            parts = self._one_class(train_drawer, test_drawer, names)
        anomalous = set(self._anomaly_ids)

        def make(pool: ClassPool, positions: list[int], augment):
            positions = sorted(positions)
            labels = [int(pool.targets[i] in anomalous) for i in positions]
            return pool.dataset(positions, labels, self.channels, self.image_size, augment,
                                self.cache_images)

        train_positions, val_positions, test_positions = parts
        return SplitDatasets(
            train=make(data.train, train_positions, self._augment),
            val=make(data.train, val_positions, None) if val_positions else None,
            test=make(test_drawer.pool, test_positions, None),
            class_names=list(names),
        )

    def _one_vs_rest(self, train_drawer: _Drawer, test_drawer: _Drawer, names: list[str]):
        if self.test_per_class is None and test_drawer is train_drawer:
            raise DataError(
                f"test_per_class must be set for source {self.source}"
                + (" without test_root" if self.source == "folder" else "")
                + ": its test images are drawn from the same images as training, so 'all of "
                "them' is not a choice"
            )
        test_anomalies = self._draw(
            test_drawer, _Part("test", True, "test_per_class"), self.test_per_class, names,
            per_class=True,
        )
        test_normals = self._draw(
            test_drawer, _Part("test", False, "test_per_class", True), len(test_anomalies), names
        )
        train_anomalies = self._draw(
            train_drawer, _Part("train", True, "train_per_class"), self.train_per_class, names,
            per_class=True, trial=self.trial,
        )
        train_normals = self._draw(
            train_drawer, _Part("train", False, "train_per_class", True), len(train_anomalies), names,
            trial=self.trial,
        )
        keep_anomalies, val_anomalies = self._hold_out(train_drawer, train_anomalies, True)
        keep_normals, val_normals = self._hold_out(train_drawer, train_normals, False)
        return (
            keep_anomalies + keep_normals,
            val_anomalies + val_normals,
            test_anomalies + test_normals,
        )

    def _hold_out(
        self, drawer: _Drawer, positions: list[int], anomalous: bool
    ) -> tuple[list[int], list[int]]:
        """Split one label's training draw into (train, val): ``val_fraction`` of it, spread
        evenly over its classes, seeded by ``seed`` and ``trial``.

        Per label rather than per class, so that validation keeps the draw's balance of normals
        and anomalies (per-class rounding of nine small normal classes lost a third of them).
        """
        classes = self._anomaly_ids if anomalous else self._normal_ids
        targets = drawer.pool.targets
        members = {c: sorted(p for p in positions if targets[p] == c) for c in classes}
        n_val = math.floor(self.val_fraction * len(positions) + 0.5)
        if self.val_fraction > 0 and n_val == 0 and len(positions) > 1:
            n_val = 1  # a tiny draw still validates on one image of each label
        n_val = min(n_val, len(positions) - 1)  # and keeps one to train on
        quota = even_quota(n_val, [len(members[c]) for c in classes])
        rng = _rng(self.seed, _VAL_CUT, self.trial, int(anomalous))
        val: list[int] = []
        for c, q in zip(classes, quota, strict=True):
            val += [members[c][j] for j in rng.permutation(len(members[c]))[:q]]
        held = set(val)
        return [p for p in positions if p not in held], val

    def _one_class(self, train_drawer: _Drawer, test_drawer: _Drawer, names: list[str]):
        test = self._draw(
            test_drawer, _Part("test", False, "n_test_normals"), self.n_test_normals, names
        ) + self._draw(
            test_drawer, _Part("test", True, "n_test_anomalies"), self.n_test_anomalies, names
        )
        val = []
        if self.n_val_normals > 0:
            val += self._draw(
                train_drawer, _Part("val", False, "n_val_normals"), self.n_val_normals, names
            )
        if self.n_val_anomalies > 0:
            val += self._draw(
                train_drawer, _Part("val", True, "n_val_anomalies"), self.n_val_anomalies, names
            )
        train = self._draw(
            train_drawer, _Part("train", False, "n_train_normals"), self.n_train_normals, names,
            trial=self.trial,
        )
        return train, val, test


def _class_list(argument: str, value) -> list[ClassSpec]:
    """``value`` as a list of class names / indices, or :class:`DataError` naming ``argument``."""
    if value is None:
        return []
    items = [value] if isinstance(value, (int, str)) else list(value)
    for item in items:
        ok = (isinstance(item, int) and not isinstance(item, bool) and item >= 0) or (
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
