"""Per-class shares of a table's rows, optionally group-disjoint (test groups).

Per label value, in a seeded order (one stream per class, so one class's share never moves
another's rows): validation first, then test from what validation left, then the normal rows
left are train. With groups, the test groups' rows are the test split and validation and train
come from the other groups only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from adlight.checks import check_fraction, is_number
from adlight.data.datasets import Sample
from adlight.data.splits.core import pick_abnormal, seeded_rng
from adlight.errors import ConfigError, DataError

#: ``split`` of the rows that no split uses (anomalies beyond the test and val shares, rows of
#: test groups beyond ``test_size``); they are listed in split.csv all the same.
UNUSED = "unused"

# int before float in every signature: jsonargparse tries a union's members in order, and
# float first would turn a count of 100 from the YAML into the number 100.0
Size = int | float


@dataclass
class TableRecord:
    """A row that survived reading: its sample (with its group), where it is, its split."""

    sample: Sample
    where: str
    split: str = field(default=UNUSED)


def check_size(name: str, value: Size | None, allow_none: bool = True) -> Size | None:
    """A per-class share: a fraction (float in [0, 1]) or a count (int >= 0)."""
    if value is None and allow_none:
        return None
    if not is_number(value):
        raise ConfigError(
            f"{name} must be a fraction (float in [0, 1]) or a count (int >= 0), got {value!r}"
        )
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{name} must be a count >= 0 or a fraction in [0, 1], got {value!r}")
        return value
    return check_fraction(name, value, one=True, error=DataError)


def size_to_count(size: Size, n: int) -> int:
    """How many of ``n`` rows a share takes: a count as given; a fraction rounded, and at
    least one when it is positive and the class has two rows or more."""
    if isinstance(size, int):
        return size
    count = int(np.floor(size * n + 0.5))
    if size > 0 and count == 0 and n >= 2:
        count = 1
    return count


def _cut(members: list[int], size: Size | None, total: int, what: str, name: str) -> int:
    """How many of ``members`` a share takes (``None``: all). A fraction is of the class's
    ``total`` rows, capped at what is left; a count asking for more than is left is an error."""
    if size is None:
        return len(members)
    count = size_to_count(size, total)
    if isinstance(size, float):
        return min(count, len(members))
    if count > len(members):
        raise DataError(
            f"class {name!r} has {len(members)} rows left for {what}, but {what}={size} "
            f"asks for {count}"
        )
    return count


@dataclass(frozen=True)
class TableShares:
    """The shares of a table split, its seed, and the groups (``group_column`` names the
    column in messages; ``None``: no groups)."""

    val_size: Size
    test_size: Size | None
    anomaly_test_size: Size | None
    abnormal_train_fraction: float
    seed: int
    group_column: str | None = None
    test_groups: Sequence[str] | None = None
    num_test_groups: int | None = None

    def choose_test_groups(self, records: list[TableRecord]) -> set[str]:
        groups = sorted({r.sample.group for r in records})
        if self.test_groups is not None:
            unknown = [g for g in self.test_groups if g not in groups]
            if unknown:
                raise DataError(
                    f"test_groups value {unknown[0]!r} does not occur in column "
                    f"{self.group_column!r} (groups: {', '.join(groups)})"
                )
            chosen = set(self.test_groups)
        else:
            if self.num_test_groups >= len(groups):
                raise DataError(
                    f"num_test_groups={self.num_test_groups} leaves no group for training: column "
                    f"{self.group_column!r} has {len(groups)} groups ({', '.join(groups)})"
                )
            picks = seeded_rng(self.seed, 0).choice(len(groups), size=self.num_test_groups,
                                                    replace=False)
            chosen = {groups[i] for i in picks}
        if chosen == set(groups):
            raise DataError(
                f"test_groups take every group of {self.group_column!r} "
                f"({', '.join(groups)}); no group is left for training"
            )
        return chosen

    def assign(self, records: list[TableRecord], class_names: list[str],
               n_normal: int) -> list[str]:
        """Set every record's ``split``; the first ``n_normal`` classes are normal. Returns
        the test groups (sorted; empty without groups)."""
        grouped = self.group_column is not None
        test_groups = self.choose_test_groups(records) if grouped else set()
        leftover: list[int] = []  # anomalies neither val nor test: abnormal_train_fraction's
        for class_id, name in enumerate(class_names):
            normal = class_id < n_normal
            members = [i for i, r in enumerate(records) if r.sample.class_id == class_id]
            rng = seeded_rng(self.seed, 1 + class_id)
            order = [members[j] for j in rng.permutation(len(members))]
            held = [i for i in order if records[i].sample.group in test_groups]
            dev = [i for i in order if records[i].sample.group not in test_groups]
            n_val = _cut(dev, self.val_size, len(dev), "val_size", name)
            for i in dev[:n_val]:
                records[i].split = "val"
            dev = dev[n_val:]
            size = self.test_size if normal else self.anomaly_test_size
            what = "test_size" if normal else "anomaly_test_size"
            if grouped:  # the test groups' rows: all of them unless a share is given
                pool, total = held, len(held)
            else:  # what validation left; a share is of the class's rows
                pool, total = dev, len(members)
                if size is None and normal:
                    size = 0.2
            n_test = _cut(pool, size, total, what, name)
            for i in pool[:n_test]:
                records[i].split = "test"
            left = dev if grouped else dev[n_test:]
            if normal:
                for i in left:
                    records[i].split = "train"
            else:
                leftover += left
        chosen = pick_abnormal([records[i].sample.class_id for i in leftover],
                               self.abnormal_train_fraction, self.seed)
        for j in chosen:
            records[leftover[j]].split = "train"
        self._check(records, sorted(test_groups))
        return sorted(test_groups)

    @staticmethod
    def _check(records: list[TableRecord], test_groups: list[str]) -> None:
        where = f" (test groups: {', '.join(test_groups)})" if test_groups else ""
        train = [r for r in records if r.split == "train"]
        if not any(r.sample.label == 0 for r in train):
            raise DataError(
                f"the train split has no normal rows{where}: every normal row went to val or "
                "test; lower val_size / test_size or choose fewer test groups"
            )
        test = [r for r in records if r.split == "test"]
        for label, kind in ((0, "normal"), (1, "anomalous")):
            if not any(r.sample.label == label for r in test):
                raise DataError(
                    f"the test split has no {kind} rows{where}; choose test groups with "
                    f"{kind} images, or a larger test share"
                )
