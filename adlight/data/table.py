"""Images indexed by a table (CSV/TSV): one row per image, columns chosen in the config.

Sets such as HAM10000 (``HAM10000_metadata.csv``: ``image_id``, ``dx``), a driving-distraction
set (image, behaviour, driver id) or a face set split by an attribute (Andrews et al.: male
normal, female anomalous) are described by a table, not by folders. :class:`TableDataModule`
reads such a table: a label column and the values of it that count as normal, optional mask
and group columns, and splits it, seeded, into train / val / test. The presets in
``adlight.data.ham10000`` and ``adlight.data.driving`` are thin subclasses.

Every row is checked when the data is first read, so a bad table fails at setup with the row
(``line N of FILE``) or the value named, never in the middle of an epoch.
"""

from __future__ import annotations

import csv
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from adlight.checks import check_fraction
from adlight.data.base import AnomalyDataModule, SplitDatasets
from adlight.data.datasets import ImageFileDataset, Sample, check_mask_sizes
from adlight.data.splits import check_abnormal_train_fraction, pick_abnormal, seeded_rng
from adlight.errors import ConfigError, DataError

#: ``split`` of the rows that no split uses (anomalies beyond the test and val shares, rows of
#: test groups beyond ``test_size``); they are listed in split.csv all the same.
UNUSED = "unused"

# int before float in every signature: jsonargparse tries a union's members in order, and
# float first would turn a count of 100 from the YAML into the number 100.0
Size = int | float


@dataclass(frozen=True)
class TableRow:
    """One row of the table: its cells and where it came from (for error messages)."""

    where: str
    cells: dict[str, str]


@dataclass
class _Record:
    """A row that survived reading: its sample, its group and the split it went to."""

    sample: Sample
    group: str | None
    where: str
    split: str = field(default=UNUSED)


def check_size(name: str, value: Size | None, allow_none: bool = True) -> Size | None:
    """A per-class share: a fraction (float in [0, 1]) or a count (int >= 0)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
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
    least one when it is positive and the class has two rows or more (so a small class still
    reaches every split it should)."""
    if isinstance(size, int):
        return size
    count = int(np.floor(size * n + 0.5))
    if size > 0 and count == 0 and n >= 2:
        count = 1
    return count


def _values(name: str, values: Sequence[str | int] | None) -> list[str] | None:
    """Label / group values as stripped strings (a YAML ``0`` matches a CSV ``0``)."""
    if values is None:
        return None
    if isinstance(values, (str, int)):
        values = [values]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise ConfigError(f"{name} must be a list of strings or ints, got {list(values)!r}")
        out.append(str(v).strip())
    if len(set(out)) != len(out):
        raise ConfigError(f"{name} lists a value twice: {out}")
    return out


def _template_fields(template: str) -> list[str]:
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise ConfigError(f"image_template {template!r} is not a valid format string: {e}") from e


class TableDataModule(AnomalyDataModule):
    """Images listed in a table, labelled by one of its columns.

    Args:
        table: the CSV (or TSV) file, with a header row.
        label_column: the column whose value says what an image is (``dx``, ``behaviour``,
            ``gender``).
        normal_values: the values of ``label_column`` that count as normal.
        anomalous_values: the values that count as anomalous; ``None``: every value that is
            neither normal nor excluded. When given, a row with any other value is an error
            naming the row and the value.
        exclude_values: values whose rows are left out altogether.
        image_column: the column holding the image path.
        image_template: instead of ``image_column``, a ``str.format`` pattern over the row's
            columns, e.g. ``"{image_id}.jpg"`` or ``"imgs/train/{classname}/{img}"``.
        image_dirs: folders a relative image path is looked up in, in order (the first that
            holds the file wins); default: the table's folder. Absolute paths are used as they are.
        mask_column: optional column of mask paths (looked up in ``mask_dirs``, default the
            table's folder); empty for normals, required for every anomaly that is used.
        mask_dirs: folders for relative mask paths.
        group_column: optional column (e.g. a driver or patient id) for a group-disjoint split:
            the rows of the test groups form the test split and no other split sees a test group.
        test_groups: the test groups, by value of ``group_column``.
        num_test_groups: when ``test_groups`` is not given, how many groups are drawn at random
            (seeded) as test groups.
        val_size: per class (label value), the share of rows for validation (where thresholds
            are chosen): a fraction of the class's rows (float) or a count (int). With groups,
            taken from the rows of the non-test groups.
        test_size: per normal class, the share of rows for test. Default (``None``): 0.2
            without groups; all rows of the test groups with groups.
        anomaly_test_size: per anomalous class, the share for test. Default (``None``): every
            anomaly that validation left (without groups); all rows of the test groups (with).
        abnormal_train_fraction: share of each anomalous class's leftover rows (neither val nor
            test) moved into train, for supervised families; 0 keeps train normal-only.
        delimiter: the field separator; default tab for ``.tsv``/``.tab`` files, else comma.

    Splits (per label value, seeded by ``seed``; written to ``split.csv`` with the group and
    the unused rows): validation first, then test from what validation left, then the normal
    rows left are the train split. Without groups: ``val_size`` and ``test_size`` /
    ``anomaly_test_size`` of every class. With groups: the test groups' rows are the test split
    (``test_size`` / ``anomaly_test_size``, when given, take that share of each class), and
    validation and train come from the other groups only. ``class_names`` is the normal values,
    then the anomalous values (in the order given, else sorted); ``class_id`` indexes it.
    """

    def __init__(
        self,
        table: str,
        label_column: str = "label",
        normal_values: Sequence[str | int] = ("normal",),
        anomalous_values: Sequence[str | int] | None = None,
        exclude_values: Sequence[str | int] = (),
        image_column: str = "path",
        image_template: str | None = None,
        image_dirs: Sequence[str] | None = None,
        mask_column: str | None = None,
        mask_dirs: Sequence[str] | None = None,
        group_column: str | None = None,
        test_groups: Sequence[str | int] | None = None,
        num_test_groups: int | None = None,
        val_size: int | float = 0.1,
        test_size: int | float | None = None,
        anomaly_test_size: int | float | None = None,
        abnormal_train_fraction: float = 0.0,
        delimiter: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.table = None if table is None else Path(table)
        self.label_column = label_column
        self.normal_values = _values("normal_values", normal_values)
        if not self.normal_values:
            raise ConfigError("normal_values must name at least one value of the label column")
        self.anomalous_values = _values("anomalous_values", anomalous_values)
        self.exclude_values = _values("exclude_values", exclude_values) or []
        named = [("normal_values", self.normal_values), ("anomalous_values", self.anomalous_values
                 or []), ("exclude_values", self.exclude_values)]
        for i, (name_a, a) in enumerate(named):
            for name_b, b in named[i + 1:]:
                both = sorted(set(a) & set(b))
                if both:
                    raise ConfigError(f"{both[0]!r} is in both {name_a} and {name_b}")
        if self.anomalous_values == []:
            raise ConfigError("anomalous_values is empty; leave it out to make every other value "
                              "anomalous")
        self.image_column = image_column
        self.image_template = image_template
        if image_template is not None:
            _template_fields(image_template)  # checks the pattern now, not at setup
        self.image_dirs = None if image_dirs is None else [Path(d) for d in _as_list(image_dirs)]
        self.mask_column = mask_column
        self.mask_dirs = None if mask_dirs is None else [Path(d) for d in _as_list(mask_dirs)]
        self.group_column = group_column
        self.test_groups = _values("test_groups", test_groups)
        if num_test_groups is not None and (
            isinstance(num_test_groups, bool) or not isinstance(num_test_groups, int)
            or num_test_groups < 1
        ):
            raise ConfigError(f"num_test_groups must be an int >= 1, got {num_test_groups!r}")
        self.num_test_groups = num_test_groups
        if group_column is None and (self.test_groups is not None or num_test_groups is not None):
            raise ConfigError("test_groups / num_test_groups need a group_column to split by")
        if group_column is not None and self.test_groups is None and num_test_groups is None:
            raise ConfigError(
                f"group_column {group_column!r} needs test_groups (the groups to test on) or "
                "num_test_groups (how many to draw at random)"
            )
        self.val_size = check_size("val_size", val_size, allow_none=False)
        self.test_size = check_size("test_size", test_size)
        self.anomaly_test_size = check_size("anomaly_test_size", anomaly_test_size)
        self.abnormal_train_fraction = check_abnormal_train_fraction(abnormal_train_fraction)
        self.delimiter = delimiter
        self._records: list[_Record] = []

    # ----------------------------------------------------------------- reading
    def _read_rows(self) -> tuple[list[str], list[TableRow], str]:
        """``(columns, rows, source)`` of the table; presets may build them another way."""
        path = self.table
        if path is None:
            raise DataError(f"{type(self).__name__}: no table given")
        if not path.is_file():
            raise DataError(f"table {path} does not exist or is not a file")
        delimiter = self.delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab") else ",")
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f, delimiter=delimiter)
                columns = [c.strip() for c in reader.fieldnames or []]
                if not columns:
                    raise DataError(f"table {path} is empty: expected a header row")
                reader.fieldnames = columns
                rows = []
                for cells in reader:
                    if None in cells:  # more cells than the header has columns
                        raise DataError(
                            f"line {reader.line_num} of {path} has {len(columns) + len(cells[None])}"
                            f" cells but the header has {len(columns)} columns"
                        )
                    if not any((v or "").strip() for v in cells.values()):
                        continue  # a blank line
                    rows.append(TableRow(
                        f"line {reader.line_num} of {path}",
                        {k: (v or "").strip() for k, v in cells.items()},
                    ))
        except (UnicodeDecodeError, csv.Error, OSError) as e:
            raise DataError(f"cannot read table {path}: {type(e).__name__}: {e}") from e
        return columns, rows, str(path)

    def _default_dirs(self) -> list[Path]:
        return [self.table.parent] if self.table is not None else [Path(".")]

    def _check_columns(self, columns: list[str], source: str) -> None:
        wanted = [("label_column", self.label_column)]
        if self.image_template is not None:
            wanted += [("image_template", f) for f in _template_fields(self.image_template)]
        else:
            wanted.append(("image_column", self.image_column))
        for argument, column in (("mask_column", self.mask_column),
                                 ("group_column", self.group_column)):
            if column is not None:
                wanted.append((argument, column))
        for argument, column in wanted:
            if column not in columns:
                raise DataError(
                    f"{argument} {column!r} is not a column of {source} (columns: "
                    f"{', '.join(columns)})"
                )

    @staticmethod
    def _resolve(value: str, dirs: list[Path], row: TableRow, what: str) -> str:
        path = Path(value)
        candidates = [path] if path.is_absolute() else [d / path for d in dirs]
        for candidate in candidates:
            if candidate.is_file():
                return str(candidate)
        looked = ", ".join(str(d) for d in dirs) if not path.is_absolute() else "its absolute path"
        raise DataError(f"{row.where}: {what} file {value!r} does not exist (looked in {looked})")

    def _class_names(self, present: set[str], source: str) -> list[str]:
        named = [("normal_values", self.normal_values),
                 ("anomalous_values", self.anomalous_values or []),
                 ("exclude_values", self.exclude_values)]
        for argument, values in named:
            for value in values:
                if value not in present:
                    raise DataError(
                        f"{argument} value {value!r} does not occur in column "
                        f"{self.label_column!r} of {source} (values: {', '.join(sorted(present))})"
                    )
        if self.anomalous_values is not None:
            anomalous = list(self.anomalous_values)
        else:
            anomalous = sorted(present - set(self.normal_values) - set(self.exclude_values))
        return [*self.normal_values, *anomalous]

    def _read_records(self) -> tuple[list[_Record], list[str]]:
        columns, rows, source = self._read_rows()
        self._check_columns(columns, source)
        known = set(self.normal_values) | set(self.anomalous_values or []) | set(self.exclude_values)
        present: set[str] = set()
        for row in rows:
            value = row.cells[self.label_column]
            if not value:
                raise DataError(f"{row.where}: the label column {self.label_column!r} is empty")
            if self.anomalous_values is not None and value not in known:
                raise DataError(
                    f"{row.where}: unknown {self.label_column!r} value {value!r} (normal: "
                    f"{', '.join(self.normal_values)}; anomalous: "
                    f"{', '.join(self.anomalous_values)}; excluded: "
                    f"{', '.join(self.exclude_values) or 'none'}); add it to exclude_values to "
                    "leave such rows out"
                )
            present.add(value)
        class_names = self._class_names(present, source)
        image_dirs = self.image_dirs or self._default_dirs()
        mask_dirs = self.mask_dirs or self._default_dirs()
        records: list[_Record] = []
        seen: dict[str, str] = {}
        for row in rows:
            value = row.cells[self.label_column]
            if value in self.exclude_values:
                continue
            class_id = class_names.index(value)
            label = 0 if value in self.normal_values else 1
            if self.image_template is not None:
                image = self.image_template.format_map(row.cells)
            else:
                image = row.cells[self.image_column]
            if not image:
                raise DataError(f"{row.where}: the image column {self.image_column!r} is empty")
            path = self._resolve(image, image_dirs, row, "image")
            key = os.path.normcase(os.path.abspath(path))
            if key in seen:
                raise DataError(f"{row.where}: image {path} is listed twice (also at {seen[key]}); "
                                "a file in two rows could land in train and test")
            seen[key] = row.where
            mask = None
            if self.mask_column is not None and row.cells[self.mask_column]:
                mask = self._resolve(row.cells[self.mask_column], mask_dirs, row, "mask")
            group = None
            if self.group_column is not None:
                group = row.cells[self.group_column]
                if not group:
                    raise DataError(f"{row.where}: the group column {self.group_column!r} is empty")
            records.append(_Record(Sample(path, label, class_id, mask), group, row.where))
        if not records:
            raise DataError(f"{source} has no rows left after excluding {self.exclude_values}")
        return records, class_names

    # ----------------------------------------------------------------- splitting
    def _rng(self, stream: int) -> np.random.Generator:
        # one stream per class (and one for the groups): adding a class or changing one
        # class's share leaves the other classes' splits as they were
        return seeded_rng(self.seed, stream)

    def _choose_test_groups(self, records: list[_Record]) -> set[str]:
        groups = sorted({r.group for r in records})
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
            picks = self._rng(0).choice(len(groups), size=self.num_test_groups, replace=False)
            chosen = {groups[i] for i in picks}
        if chosen == set(groups):
            raise DataError(
                f"test_groups take every group of {self.group_column!r} "
                f"({', '.join(groups)}); no group is left for training"
            )
        return chosen

    @staticmethod
    def _cut(members: list[int], size: Size | None, total: int, what: str, name: str) -> int:
        """How many of ``members`` a share takes (``None``: all of them). A fraction is of the
        class's ``total`` rows, capped at what is left; a count that asks for more than is left
        is a DataError naming the class."""
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

    def _assign(self, records: list[_Record], class_names: list[str]) -> None:
        grouped = self.group_column is not None
        test_groups = self._choose_test_groups(records) if grouped else set()
        leftover: list[int] = []  # anomalies neither val nor test: abnormal_train_fraction's
        for class_id, name in enumerate(class_names):
            normal = class_id < len(self.normal_values)
            members = [i for i, r in enumerate(records) if r.sample.class_id == class_id]
            order = [members[j] for j in self._rng(1 + class_id).permutation(len(members))]
            held = [i for i in order if records[i].group in test_groups]
            dev = [i for i in order if records[i].group not in test_groups]
            n_val = self._cut(dev, self.val_size, len(dev), "val_size", name)
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
            n_test = self._cut(pool, size, total, what, name)
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
        self._check_splits(records, sorted(test_groups))

    def _check_splits(self, records: list[_Record], test_groups: list[str]) -> None:
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
        if self.mask_column is not None:
            for r in records:
                if r.split != UNUSED and r.sample.label == 1 and r.sample.mask_path is None:
                    raise DataError(
                        f"{r.where}: anomalous image {r.sample.path} has an empty mask column "
                        f"{self.mask_column!r}; with a mask column every used anomaly needs a mask"
                    )

    def _build_splits(self) -> SplitDatasets:
        records, class_names = self._read_records()
        self._assign(records, class_names)
        self._records = records
        used = [r.sample for r in records if r.split != UNUSED]
        check_mask_sizes(used)
        has_masks = self.mask_column is not None

        def make(split: str, tf) -> ImageFileDataset:
            samples = [r.sample for r in records if r.split == split]
            return ImageFileDataset(samples, tf, self.channels, has_masks=has_masks,
                                    resize=self.image_size, cache=self.cache_images)

        val = make("val", None)
        return SplitDatasets(
            train=make("train", self.loader.augmentation()),
            val=val if len(val) else None,
            test=make("test", None),
            class_names=class_names,
        )

    def write_split_csv(self, path: str | os.PathLike) -> Path:
        """``path, split, label, class[, group]`` of every row, the unused ones included."""
        names = self._ensure_splits().class_names
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        grouped = self.group_column is not None
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "split", "label", "class", *(["group"] if grouped else [])])
            for r in self._records:
                s = r.sample
                w.writerow([s.path, r.split, s.label, names[s.class_id],
                            *([r.group] if grouped else [])])
        return path


def _as_list(values: Sequence[str] | str) -> list[str]:
    return [values] if isinstance(values, (str, os.PathLike)) else list(values)
