"""Reading a CSV/TSV table into rows that remember where they came from (for messages)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from adlight.errors import DataError


@dataclass(frozen=True)
class TableRow:
    """One row of the table: its cells and where it came from (for error messages)."""

    where: str
    cells: dict[str, str]


# what spreadsheets write besides commas (a German Excel writes ";"); tried in this order
_DELIMITERS = (",", "\t", ";", "|")


def _guess_delimiter(path: Path) -> str:
    """Tab for .tsv/.tab, else comma, unless the header has none of it but another of
    :data:`_DELIMITERS` (a ``path;label`` header would otherwise be one column)."""
    default = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = f.readline()
    except (UnicodeDecodeError, OSError):
        return default  # read_table names the problem
    if default in header:
        return default
    return next((d for d in _DELIMITERS if d in header), default)


def read_table(path: Path, delimiter: str | None = None) -> tuple[list[str], list[TableRow], str]:
    """``(columns, rows, source)``; the delimiter defaults to tab for .tsv/.tab, else comma."""
    if not path.is_file():
        raise DataError(f"table {path} does not exist or is not a file")
    delimiter = delimiter or _guess_delimiter(path)
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
