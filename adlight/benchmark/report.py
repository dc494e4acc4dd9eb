"""A table's runs as cells (mean +- std over seeds/trials), the paper's numbers beside them,
the Wilcoxon tests of Andrews et al., and the Markdown and CSV files."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from adlight.benchmark.tables import Cell, Table

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")
NOT_RECORDED = "not recorded"


@dataclass
class RunResult:
    """One run of a table: its config stem, grid point, repeat value and report (None: failed)."""

    stem: str
    point: dict[str, Any]
    repeat: Any
    report: dict[str, Any] | None
    error: str = ""


@dataclass
class Summary:
    """Our value of one cell: the values over repeats, or why there is none."""

    values: list[float] = field(default_factory=list)
    problem: str = ""

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:  # sample std; undefined for one value
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else math.nan

    def text(self) -> str:
        if not self.values:
            return self.problem or "no value"
        counts = all(isinstance(v, int) for v in self.values)  # TP/FP/TN/FN: whole numbers
        if len(self.values) == 1:
            return f"{self.values[0]} (n=1)" if counts else f"{self.mean:.3f} (n=1)"
        digits = 1 if counts else 3
        return f"{self.mean:.{digits}f} +- {self.std:.{digits}f} (n={len(self.values)})"


def problem_of(error: str) -> str:
    """What a failed run's cell says: weights that need the internet are named as such."""
    if "pretrained weights" in error:
        return "needs weights"
    if error.startswith("no metrics.json yet"):  # submitted, not (yet) finished
        return error
    return f"failed: {error}" if error else "failed"


def summarise(table: Table, results: list[RunResult]) -> dict[Cell, Summary]:
    """Every cell of the table with its values over the repeats, means added where asked."""
    per_repeat: dict[Cell, dict[Any, float]] = defaultdict(dict)
    summaries: dict[Cell, Summary] = {}
    for result in results:
        for cell, value in table.cells(result.stem, result.point, result.report).items():
            summary = summaries.setdefault(cell, Summary())
            if result.report is None:
                summary.problem = problem_of(result.error)
            elif value is None or not math.isfinite(value):
                summary.problem = summary.problem or "not in metrics.json"
            else:
                per_repeat[cell][result.repeat] = value
    for cell, values in per_repeat.items():
        summaries[cell].values = [values[r] for r in sorted(values, key=str)]
    for section, over in table.mean_over.items():
        _add_means(summaries, per_repeat, section, over)
    return summaries


def _add_means(summaries, per_repeat, section: str, over: str) -> None:
    """A ``mean`` row (over rows) or column (over columns) of ``section``, one mean per repeat."""
    cells = [c for c in summaries if c[0] == section]
    groups: dict[str, list[Cell]] = defaultdict(list)
    for cell in cells:
        groups[cell[2] if over == "rows" else cell[1]].append(cell)
    for key, members in groups.items():
        target = (section, "mean", key) if over == "rows" else (section, key, "mean")
        repeats = set.intersection(*(set(per_repeat.get(c, {})) for c in members))
        mean = Summary([float(np.mean([per_repeat[c][r] for c in members]))
                        for r in sorted(repeats, key=str)])
        if not mean.values:
            mean.problem = "incomplete"
        summaries[target] = mean


def load_paper_numbers(table: str, path: Path = PAPER_NUMBERS) -> dict[Cell, float]:
    """The paper's numbers of ``table`` recorded in ``paper_numbers.yaml``: section -> row -> column."""
    recorded = (yaml.safe_load(path.read_text()) or {}).get(table) or {}
    return {(section, row, str(column)): float(value)
            for section, rows in recorded.items() for row, columns in (rows or {}).items()
            for column, value in (columns or {}).items() if value is not None}


def wilcoxon_rows(table: Table, results: list[RunResult]) -> list[dict[str, Any]]:
    """Each representation against the baseline row, paired per task x trial x nu.

    The pairs are the AUROC at each nu of ``image_AUROC_by_nu`` of two runs with the same
    task and trial (same test set and training draw); scipy's two-sided signed-rank test.
    """
    from scipy.stats import wilcoxon

    if table.baseline_row is None:
        return []
    by_row: dict[str, dict[tuple, float]] = defaultdict(dict)
    for result in results:
        if result.report is None:
            continue
        (_, row, column), = table.cells(result.stem, result.point, None)
        for nu, value in (result.report.get("image_AUROC_by_nu") or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                by_row[row][(column, str(result.repeat), nu)] = float(value)
    baseline = by_row.pop(table.baseline_row, {})
    rows = []
    for row, values in by_row.items():
        keys = sorted(set(values) & set(baseline))
        entry: dict[str, Any] = {"representation": row, "against": table.baseline_row, "pairs": len(keys)}
        if len(keys) > 1:
            test = wilcoxon([values[k] for k in keys], [baseline[k] for k in keys])
            wins = sum(values[k] > baseline[k] for k in keys)
            entry.update(statistic=float(test.statistic), p_value=float(test.pvalue), better=wins)
        rows.append(entry)
    return rows


def _sections(summaries: dict[Cell, Summary]) -> dict[str, tuple[list[str], list[str]]]:
    """section -> (rows, columns) in the order they were first met, ``mean`` last."""
    layout: dict[str, tuple[list[str], list[str]]] = {}
    for section, row, column in summaries:
        rows, columns = layout.setdefault(section, ([], []))
        rows.append(row) if row not in rows else None
        columns.append(column) if column not in columns else None
    for rows, columns in layout.values():
        for names in (rows, columns):
            if "mean" in names:
                names.remove("mean")
                names.append("mean")
    return layout


def _paper_text(paper: dict[Cell, float], cell: Cell) -> str:
    return f"{paper[cell]:.3f}" if cell in paper else NOT_RECORDED


def write_table(directory: Path, table: Table, summaries: dict[Cell, Summary],
                paper: dict[Cell, float], header: list[str],
                wilcoxon: list[dict[str, Any]]) -> tuple[Path, Path]:
    """``<table>.md`` and ``<table>.csv`` in ``directory``; ``header`` lines open both."""
    directory.mkdir(parents=True, exist_ok=True)
    layout = _sections(summaries)
    for section, row, _column in paper:  # a paper-only row (e.g. its best layer) still shows
        if section in layout and row not in layout[section][0]:
            layout[section][0].append(row)
    lines = [f"# {table.title}", "", *header, "", table.notes, ""]
    csv_rows: list[dict[str, Any]] = []
    for section, (rows, columns) in layout.items():
        heads = [(c, f"{c} (paper)") if table.paper_column else (c,) for c in columns]
        lines += [f"## {section}", "",
                  "| row | " + " | ".join(h for pair in heads for h in pair) + " |",
                  "|---|" + ("---|---|" if table.paper_column else "---|") * len(columns)]
        for row in rows:
            cells, csv_row = [], {"section": section, "row": row}
            for column in columns:
                cell = (section, row, column)
                summary = summaries.get(cell, Summary(problem="-"))
                cells += [summary.text(), _paper_text(paper, cell)] if table.paper_column else [summary.text()]
                csv_row.update({f"{column} mean": _number(summary.mean),
                                f"{column} std": _number(summary.std),
                                f"{column} n": len(summary.values)})
                if table.paper_column:
                    csv_row[f"{column} paper"] = _paper_text(paper, cell)
                if summary.problem and not summary.values:
                    csv_row[f"{column} mean"] = summary.problem
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
            csv_rows.append(csv_row)
        lines.append("")
    if wilcoxon:
        lines += ["## Wilcoxon signed-rank tests against " + wilcoxon[0]["against"], "",
                  "Pairs: the AUROC at each of the 21 nu of two runs with the same task and trial "
                  "(same test set, same training draw); scipy.stats.wilcoxon, two-sided. The nu "
                  "of one run are not independent samples, so read p as a ranking aid.", "",
                  "| representation | pairs | better than baseline | statistic | p-value |",
                  "|---|---|---|---|---|"]
        for entry in wilcoxon:
            lines.append(f"| {entry['representation']} | {entry['pairs']} | {entry.get('better', '-')} | "
                         f"{_format(entry.get('statistic'))} | {_format(entry.get('p_value'), '.3g')} |")
            csv_rows.append({"section": f"Wilcoxon against {entry['against']}",
                             "row": entry["representation"], "pairs": entry["pairs"],
                             "better": entry.get("better", ""), "statistic": entry.get("statistic", ""),
                             "p-value": entry.get("p_value", "")})
        lines.append("")
    markdown = directory / f"{table.name}.md"
    markdown.write_text("\n".join(lines))
    comma = directory / f"{table.name}.csv"
    with comma.open("w", newline="") as handle:
        handle.writelines(f"# {line}\n" for line in header)
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for r in csv_rows for k in r)))
        writer.writeheader()
        writer.writerows(csv_rows)
    return markdown, comma


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _format(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)
