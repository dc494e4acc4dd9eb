"""``adlight compare RUN_DIR RUN_DIR ... [--out DIR]``: one page that sets test runs side by side.

Built from run directories alone: each run's ``results.json`` (written beside its
``report.html``) holds its report, thresholds and per-image scores and thumbnails. Images are
matched by path; thumbnails are linked, not copied, so the page expects the runs to stay
where they were (its links are relative, so moving the common parent along is fine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from adlight.cli.run_dirs import check_writable
from adlight.errors import AdlightError, DataError
from adlight.report_page.page import RESULTS_NAME, render

COMPARE_NAME = "compare.html"


def find_results(run_dir: Path) -> Path:
    """``run_dir/results.json``, or the one newest under it (a root with lightning_logs/version_N)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"compare: run directory {run_dir} does not exist")
    direct = run_dir / RESULTS_NAME
    if direct.is_file():
        return direct
    found = sorted(run_dir.rglob(RESULTS_NAME), key=lambda p: p.stat().st_mtime)
    if not found:
        raise DataError(f"compare: no {RESULTS_NAME} in {run_dir} (run `adlight test` with a version of adlight that writes report.html)")
    return found[-1]


def _run_name(results: Path, taken: set[str]) -> str:
    directory = results.parent
    name = directory.name if directory.parent.name != "lightning_logs" else f"{directory.parent.parent.name}/{directory.name}"
    unique, n = name, 1
    while unique in taken:
        n += 1
        unique = f"{name} ({n})"
    taken.add(unique)
    return unique


def compare_data(run_dirs: list[Path], out_dir: Path) -> dict[str, Any]:
    """The compare page's JSON: ``runs`` (name, report, thresholds) and ``images``: one row per
    test path with each run's score, outcome at its own threshold, and thumbnails (relative to
    ``out_dir``), in the first run's score order; images a run lacks have ``null`` there."""
    runs, per_run, taken = [], [], set()
    for run_dir in run_dirs:
        path = find_results(run_dir)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"compare: cannot read {path}: {error}") from error
        link = os.path.relpath(path.parent, out_dir).replace(os.sep, "/")
        runs.append({"name": _run_name(path, taken), "dir": str(path.parent), "report": data["report"],
                     "thresholds": data["thresholds"]})
        per_run.append({im["path"]: dict(im, **{k: f"{link}/{im[k]}" for k in ("image", "overlay", "predicted") if k in im})
                        for im in data["images"]})
    _warn_unshared(runs, per_run)
    first = sorted(per_run[0].values(), key=lambda im: (-im["score"], im["index"]))
    paths = [im["path"] for im in first] + sorted(set().union(*per_run) - set(per_run[0]))
    images = []
    for p in paths:
        entries = [run.get(p) for run in per_run]
        known = next(e for e in entries if e is not None)
        images.append({"path": p, "label": known["label"], "class": known["class"],
                       "image": next((e["image"] for e in entries if e and "image" in e), None),
                       "runs": [None if e is None else {k: e.get(k) for k in ("score", "overlay", "predicted")}
                                for e in entries]})
    return {"kind": "compare", "title": "adlight compare: " + ", ".join(r["name"] for r in runs),
            "runs": runs, "images": images}


def _warn_unshared(runs: list[dict], per_run: list[dict]) -> None:
    """Runs tested on other images (another category, another root) are not comparable image by
    image: say so when they share none, or fewer than half of the smallest run's."""
    shared = set.intersection(*(set(images) for images in per_run))
    smallest = min(len(images) for images in per_run)
    names = ", ".join(run["name"] for run in runs)
    if not shared:
        warnings.warn(f"compare: the runs ({names}) share no test image (matched by path): their "
                      "rows do not line up; compare their metrics only", UserWarning, stacklevel=3)
    elif len(shared) < smallest / 2:
        warnings.warn(f"compare: the runs ({names}) share only {len(shared)} test image(s) of "
                      f"{smallest}: too few to compare image by image", UserWarning, stacklevel=3)


def build_compare_page(run_dirs: list[Path], out: Path) -> Path:
    """Write ``compare.html`` into ``out`` (created) and return its path."""
    if len(run_dirs) < 2:
        raise DataError(f"compare: give at least two run directories, got {len(run_dirs)}")
    out = Path(out)
    check_writable(out, "compare: --out")
    out.mkdir(parents=True, exist_ok=True)
    page = out / COMPARE_NAME
    page.write_text(render(compare_data([Path(d) for d in run_dirs], out), "compare.js"), encoding="utf-8")
    return page


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="adlight compare", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="test run directories (or roots above them)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for compare.html (default: here)")
    args = parser.parse_args(argv)
    try:
        page = build_compare_page(args.run_dirs, args.out)
    except AdlightError as error:
        print(f"adlight: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {page}")
