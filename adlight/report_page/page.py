"""Builds ``report.html`` for a test run: thumbnails into ``report_files/``, ``results.json``,
and one self-contained HTML file (inline CSS and JS from this package, no network)."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from importlib.resources import files as package_files
from pathlib import Path
from typing import Any

from torch import Tensor

from adlight.report_page.data import image_rows, page_data, pro_points
from adlight.report_page.thumbnails import map_range, write_image_files

PAGE_NAME = "report.html"
RESULTS_NAME = "results.json"
FILES_DIR = "report_files"


def free_path(path: Path) -> Path:
    """``path``, or ``name-1``, ``name-2``... if taken: a second test into the same run
    directory must not overwrite the first's page (callbacks.report.unique_path's rule; that
    module imports this one, so the four lines are repeated rather than imported)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def _asset(name: str) -> str:
    return (package_files("adlight.report_page") / "assets" / name).read_text(encoding="utf-8")


def render(data: dict[str, Any], script: str) -> str:
    """The page: the template with CSS, the shared chart code, ``script`` and ``data`` inlined.

    The JSON sits in a ``<script type="application/json">``; ``<`` is escaped so that no
    path or class name can close that element.
    """
    payload = json.dumps(data, allow_nan=False).replace("<", "\\u003c")
    return (_asset("page.html")
            .replace("{{title}}", html.escape(data.get("title", "adlight")))
            .replace("{{css}}", _asset("page.css"))
            # data last: a path in it could spell "{{js}}", the JS never spells "{{data}}"
            .replace("{{js}}", _asset("common.js") + "\n" + _asset(script))
            .replace("{{data}}", payload))


def build_run_page(
    directory: Path,
    report: dict[str, Any],
    scores: Tensor,
    labels: Tensor,
    class_ids: Tensor,
    paths: Sequence[str],
    class_names: Sequence[str] = (),
    image_at: Callable[[int], Tensor] | None = None,
    anomaly_maps: Tensor | None = None,
    masks: Tensor | None = None,
    confusion: Sequence[dict[str, Any]] | None = None,
    pro: list[list[float]] | None = None,
) -> Path:
    """Write ``report.html``, ``results.json`` and ``report_files/`` into ``directory``.

    Plain inputs, one entry per test image in split order: ``report`` is what metrics.json
    holds (thresholds and their sources included); ``image_at(i)`` returns image i as
    ``C x H x W`` in [0, 1]; ``anomaly_maps`` and ``masks`` are ``N x H x W`` where the
    model localises; ``confusion`` the rows of confusion.csv; ``pro`` the report's PRO curve
    points (computed from the maps when ``None``). Returns the page's path.
    """
    directory = Path(directory)
    rows = image_rows(scores, labels, class_ids, paths, class_names)
    folder = free_path(directory / FILES_DIR)
    folder.mkdir(parents=True)
    pixel_threshold = report.get("pixel_threshold")
    colours = map_range(anomaly_maps) if anomaly_maps is not None else (0.0, 1.0)
    files = []
    for i in range(len(rows)):
        written = write_image_files(
            folder, f"{i:05d}", image_at(i) if image_at is not None else None,
            anomaly_maps[i] if anomaly_maps is not None else None,
            masks[i] if masks is not None else None, colours, pixel_threshold)
        files.append({kind: f"{folder.name}/{name}" for kind, name in written.items()})
    pro = pro if pro is not None else pro_points(anomaly_maps, masks)
    data = page_data(report, rows, files, pro=pro, confusion=confusion,
                     title=f"adlight test report: {report.get('model', '')}".strip(": "))
    free_path(directory / RESULTS_NAME).write_text(json.dumps(data, allow_nan=False) + "\n")
    page = free_path(directory / PAGE_NAME)
    page.write_text(render(data, "run.js"), encoding="utf-8")
    return page
