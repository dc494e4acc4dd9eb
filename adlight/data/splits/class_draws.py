"""Splits made by class from a labelled source: one-vs-rest and one-class with trials.

Every draw spreads its count evenly over the classes it draws from (:func:`even_quota`). Test
images are drawn first, then validation, then training, all from ``seed`` alone except the
training draw, which also depends on ``trial``: trials share one test and one validation set.
A draw that finds fewer images than asked uses what there is, warns and records a shortfall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from lightning.pytorch.utilities import rank_zero_warn

from adlight.data.sources import ClassPool
from adlight.data.splits.core import even_quota, seeded_rng
from adlight.errors import DataError

# independent random streams: the fixed order test and validation images are taken in, the
# per-trial training draw, and the per-trial validation cut of one_vs_rest's training draw
_ORDER, _TRAIN, _VAL_CUT = 0, 1, 2


class Drawer:
    """Takes images of one pool class by class, never the same image twice.

    Test and validation images come from the front of a fixed, seeded order of each class;
    training images are a sample, seeded by ``seed`` and ``trial``, of what is left.
    """

    def __init__(self, pool: ClassPool, n_classes: int, seed: int, pool_id: int) -> None:
        self.pool = pool
        self.seed = seed
        self.total = [len(m) for m in pool.by_class(n_classes)]
        self.left = [
            [m[j] for j in seeded_rng(seed, _ORDER, pool_id, c).permutation(len(m))]
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
                pick = seeded_rng(self.seed, _TRAIN, trial, c).permutation(len(self.left[c]))[:q]
                chosen = [self.left[c][j] for j in pick]
            taken = set(chosen)
            self.left[c] = [i for i in self.left[c] if i not in taken]
            out += chosen
        return out


@dataclass(frozen=True)
class Part:
    """One part of one split (e.g. the test anomalies) and the argument that asks for it."""

    split: str  # train | val | test
    anomalous: bool
    argument: str
    matches_anomalies: bool = False  # one_vs_rest's normals: as many as the anomalies drawn

    @property
    def key(self) -> str:
        return f"{self.split}_{'anomalous' if self.anomalous else 'normal'}"


@dataclass
class ClassDraw:
    """The draws of one split: which classes are normal and anomalous, the seed and trial.

    ``shortfalls`` collects ``{part key: {argument, asked, available, used}}``; ``owner``
    names the datamodule in warnings.
    """

    names: list[str]
    normal_ids: list[int]
    anomaly_ids: list[int]
    seed: int
    trial: int
    owner: str
    shortfalls: dict[str, dict] = field(default_factory=dict)

    def draw(self, drawer: Drawer, part: Part, asked: int | None, per_class: bool = False,
             trial: int | None = None) -> list[int]:
        """Take ``asked`` images (per class with ``per_class``; None: all left) for ``part``."""
        names = self.names
        classes = self.anomaly_ids if part.anomalous else self.normal_ids
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
                f"{self.owner}: {what}{f' ({wanted} in all)' if per_class else ''}, "
                f"but only {sum(avail)} are "
                f"available: {where}. Using {used}."
            )
        return drawer.take(classes, quota, trial)

    def one_vs_rest(self, train: Drawer, test: Drawer, train_per_class: int | None,
                    test_per_class: int | None, val_fraction: float):
        """Minhas & Zelek: both labels in train, a balanced validation cut of it, and a test
        split of ``test_per_class`` per anomalous class and as many normals."""
        test_anomalies = self.draw(test, Part("test", True, "test_per_class"), test_per_class,
                                   per_class=True)
        test_normals = self.draw(test, Part("test", False, "test_per_class", True),
                                 len(test_anomalies))
        train_anomalies = self.draw(train, Part("train", True, "train_per_class"),
                                    train_per_class, per_class=True, trial=self.trial)
        train_normals = self.draw(train, Part("train", False, "train_per_class", True),
                                  len(train_anomalies), trial=self.trial)
        keep_anomalies, val_anomalies = self._hold_out(train, train_anomalies, True, val_fraction)
        keep_normals, val_normals = self._hold_out(train, train_normals, False, val_fraction)
        return (keep_anomalies + keep_normals, val_anomalies + val_normals,
                test_anomalies + test_normals)

    def _hold_out(self, drawer: Drawer, positions: list[int], anomalous: bool,
                  val_fraction: float) -> tuple[list[int], list[int]]:
        """One label's training draw as (train, val): ``val_fraction`` of it, even over its
        classes (per label, not per class, so validation keeps the draw's balance)."""
        classes = self.anomaly_ids if anomalous else self.normal_ids
        targets = drawer.pool.targets
        members = {c: sorted(p for p in positions if targets[p] == c) for c in classes}
        n_val = math.floor(val_fraction * len(positions) + 0.5)
        if val_fraction > 0 and n_val == 0 and len(positions) > 1:
            n_val = 1  # a tiny draw still validates on one image of each label
        n_val = min(n_val, len(positions) - 1)  # and keeps one to train on
        quota = even_quota(n_val, [len(members[c]) for c in classes])
        rng = seeded_rng(self.seed, _VAL_CUT, self.trial, int(anomalous))
        val: list[int] = []
        for c, q in zip(classes, quota, strict=True):
            val += [members[c][j] for j in rng.permutation(len(members[c]))[:q]]
        held = set(val)
        return [p for p in positions if p not in held], val

    def one_class(self, train: Drawer, test: Drawer, counts: dict[str, int]):
        """Andrews et al.: normal-only train of ``n_train_normals`` per trial; fixed test and
        validation counts (``n_test_*``, ``n_val_*``; a val count of 0 draws nothing)."""
        test_part = self.draw(test, Part("test", False, "n_test_normals"),
                              counts["n_test_normals"])
        test_part += self.draw(test, Part("test", True, "n_test_anomalies"),
                               counts["n_test_anomalies"])
        val = []
        for anomalous, argument in ((False, "n_val_normals"), (True, "n_val_anomalies")):
            if counts[argument] > 0:
                val += self.draw(train, Part("val", anomalous, argument), counts[argument])
        train_part = self.draw(train, Part("train", False, "n_train_normals"),
                               counts["n_train_normals"], trial=self.trial)
        return train_part, val, test_part
