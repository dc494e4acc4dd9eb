"""Images indexed by a table (CSV/TSV): one row per image, columns chosen in the config.

HAM10000, the driving set or a face set split by an attribute are tables, not folders. Every
row is checked when the data is first read, so a bad table fails at setup naming the row.
The split is :class:`adlight.data.splits.table_shares.TableShares`.
"""

from __future__ import annotations

import csv
import os
import string
from collections.abc import Sequence
from pathlib import Path

from adlight.checks import check_int, is_int
from adlight.data.base import AnomalyDataModule, SplitDatasets
from adlight.data.datasets import Sample
from adlight.data.masks import check_masks
from adlight.data.splits import check_abnormal_train_fraction
from adlight.data.splits.table_shares import UNUSED, TableRecord, TableShares, check_size
from adlight.data.table_rows import TableRow, read_table
from adlight.errors import ConfigError, DataError


def _values(name: str, values: Sequence[str | int] | None) -> list[str] | None:
    """Label / group values as stripped strings (a YAML ``0`` matches a CSV ``0``)."""
    if values is None:
        return None
    if isinstance(values, (str, int)):
        values = [values]
    out = []
    for v in values:
        if not (isinstance(v, str) or is_int(v)):
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
        delimiter: the field separator; default tab for ``.tsv``/``.tab`` files, else comma,
            or ``;``/``|``/tab when the header has that and not the default.

    ``class_names`` is the normal values, then the anomalous ones (as given, else sorted);
    ``split.csv`` also lists the group and the unused rows.
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
        if num_test_groups is not None:
            check_int("num_test_groups", num_test_groups, 1)
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
        self._records: list[TableRecord] = []

    # ----------------------------------------------------------------- reading
    def _read_rows(self) -> tuple[list[str], list[TableRow], str]:
        """``(columns, rows, source)`` of the table; presets may build them another way."""
        if self.table is None:
            raise DataError(f"{type(self).__name__}: no table given")
        return read_table(self.table, self.delimiter)

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

    def _read_records(self) -> tuple[list[TableRecord], list[str]]:
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
        records: list[TableRecord] = []
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
            records.append(TableRecord(Sample(path, label, class_id, mask, group), row.where))
        if not records:
            raise DataError(f"{source} has no rows left after excluding {self.exclude_values}")
        return records, class_names

    # ----------------------------------------------------------------- splitting
    def _assign(self, records: list[TableRecord], class_names: list[str]) -> None:
        shares = TableShares(self.val_size, self.test_size, self.anomaly_test_size,
                             self.abnormal_train_fraction, self.seed, self.group_column,
                             self.test_groups, self.num_test_groups)
        shares.assign(records, class_names, len(self.normal_values))
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
        check_masks(used)
        train, val, test = ([r.sample for r in records if r.split == split]
                            for split in ("train", "val", "test"))
        return self._file_splits(train, val, test, class_names,
                                 has_masks=self.mask_column is not None)

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
                            *([s.group] if grouped else [])])
        return path


def _as_list(values: Sequence[str] | str) -> list[str]:
    return [values] if isinstance(values, (str, os.PathLike)) else list(values)
