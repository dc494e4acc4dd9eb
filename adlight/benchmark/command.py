"""``adlight benchmark TABLE --root DATA``: run a paper's table as a sweep and write it.

The runs are an :mod:`adlight.sweep` (its executors, SLURM included, and its ``sweep.csv``);
runs that finished earlier with the same arguments in the same ``--output`` are reused, and
``--from-runs DIR`` builds the table from a sweep folder without running anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from adlight.benchmark.report import (
    RunResult,
    load_paper_numbers,
    summarise,
    wilcoxon_rows,
    write_table,
)
from adlight.benchmark.tables import CONFIGS, TABLES, Table, get_table, table_configs
from adlight.checks import is_int
from adlight.errors import AdlightError, ConfigError, DataError
from adlight.progress import RUN_COST_FILE
from adlight.sweep import (
    CLUSTERS,
    Runner,
    Sweep,
    _parse_pairs,
    exit_on_failed_runs,
    latest_report,
    run_sweep,
    write_summary,
)

BUDGETS = ("paper", "quick")


def parse_args(argv: list[str]) -> argparse.Namespace:
    listing = "\n".join(f"  {t.name:<13} {t.title}" for t in TABLES.values())
    parser = argparse.ArgumentParser(
        prog="adlight benchmark", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the configs x data x seeds/trials of a paper's table and write it as "
                    "Markdown and CSV, the paper's numbers beside ours.",
        epilog=f"tables:\n{listing}\n\nbudgets: quick adds each table's CPU overrides "
               "(fewer epochs or images; written into the table), paper adds none.")
    parser.add_argument("table", metavar="TABLE", help=f"one of {', '.join(TABLES)}")
    parser.add_argument("--root", help="the table's data root (MNIST/CIFAR-10 class folders, "
                                       "HAM10000, an MVTec AD folder)")
    parser.add_argument("--output", help="folder of the runs and the table (default runs/benchmark/TABLE)")
    parser.add_argument("--seeds", metavar="S1,S2", help="seed_everything values: mean +- std over them")
    parser.add_argument("--trials", metavar="T1,T2", help="data.trial values (andrews3; default 0,1,2)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override given to every run, e.g. trainer.max_epochs=5 (repeatable)")
    parser.add_argument("--budget", choices=BUDGETS, default="paper",
                        help="quick: the table's CPU overrides (see --dry-run for them)")
    parser.add_argument("--only", metavar="STEM,STEM", help="only these configs of the table (file stems)")
    parser.add_argument("--configs", default=str(CONFIGS), help="the configs folder (default: the repository's)")
    parser.add_argument("--cluster", choices=CLUSTERS, default="local",
                        help="where the runs go (adlight sweep's executors; default local)")
    parser.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                        help="a SLURM option, as adlight sweep takes it (repeatable)")
    parser.add_argument("--wait", action="store_true", help="SLURM: wait for the runs and write the table")
    parser.add_argument("--dry-run", action="store_true", help="print the runs, run nothing")
    parser.add_argument("--from-runs", metavar="DIR",
                        help="build the table from the sweep folder DIR (its sweep*.csv), run nothing")
    return parser.parse_args(argv)


def _values(text: str | None, flag: str) -> list[Any]:
    if text is None:
        return []
    values = [yaml.safe_load(v) for v in text.split(",") if v.strip()]
    if not values or not all(is_int(v) for v in values):
        raise ConfigError(f"{flag} takes integers separated by commas, got {text!r}")
    return values


def build_sweep(table: Table, ns: argparse.Namespace) -> tuple[Sweep, dict[str, Any]]:
    """The table as a sweep spec; also the overrides the user's budget and --set chose."""
    root = Path(ns.root).resolve()
    configs = _configs(table, ns, root)
    grid = table.grid(root)
    trials, seeds = _values(ns.trials, "--trials"), _values(ns.seeds, "--seeds")
    if trials and table.repeat_key != "data.trial":
        raise ConfigError(f"--trials: table {table.name} has no trials, give --seeds")
    repeats = trials or (seeds if table.repeat_key == "seed_everything" else []) \
        or list(table.default_repeats)
    if repeats:
        grid[table.repeat_key] = repeats
    if seeds and table.repeat_key != "seed_everything":  # seeds beside the trials
        grid["seed_everything"] = seeds
    chosen = {**(table.quick if ns.budget == "quick" else {}), **_parse_pairs(ns.set, "--set", False)}
    sweep = Sweep(configs=[str(c) for c in configs], grid=grid,
                  set={**table.data_overrides(root), **table.extra_set, **chosen},
                  output=ns.output, cluster=ns.cluster,
                  slurm=_parse_pairs(ns.slurm, "--slurm", False))
    return sweep, chosen


def _configs(table: Table, ns: argparse.Namespace, root: Path | None) -> list[Path]:
    """The table's configs; a derived table's (``develop``) written under ``--output``."""
    only = ns.only.split(",") if ns.only else []
    if table.derive is not None:
        return table.derive(Path(ns.configs), root or Path("."), Path(ns.output), only)
    return table_configs(table, Path(ns.configs), only)


def _with_run_cost(found: tuple[Path, dict] | None) -> tuple[Path, dict] | None:
    """A run's report with its ``run_cost.json`` (adlight.callbacks.RunCost) as ``run_cost``."""
    if found is None:
        return None
    cost = found[0].with_name(RUN_COST_FILE)
    if cost.is_file():
        return found[0], {**found[1], "run_cost": json.loads(cost.read_text())}
    return found


def _results(table: Table, rows: list[dict[str, Any]], folder: Path | None = None) -> list[RunResult]:
    """One :class:`RunResult` per summary row of a sweep (``run_sweep`` or ``sweep.csv`` of ``folder``)."""
    results = []
    for row in rows:
        point = {k[len("grid."):]: yaml.safe_load(str(v)) for k, v in row.items()
                 if k.startswith("grid.") and v not in ("", None)}
        repeat = (point.pop(table.repeat_key, "default"), point.pop("seed_everything", None)) \
            if table.repeat_key != "seed_everything" else point.pop("seed_everything", "default")
        found = None
        if row.get("status") in ("done", "reused") and row.get("run_dir"):
            found = _with_run_cost(latest_report(Path(row["run_dir"])))
        elif row.get("status") == "submitted" and folder is not None:  # a SLURM run since done?
            found = _with_run_cost(latest_report(folder / row["run"]))
        error = str(row.get("error") or "") or \
            ("" if found else f"no metrics.json yet (status {row.get('status')})")
        results.append(RunResult(Path(row["config"]).stem, point, repeat,
                                 found[1] if found else None, error))
    return results


def _write_submitted(sweep: Sweep, rows: list[dict[str, Any]]) -> None:
    """A ``sweep.csv`` of the submitted SLURM runs, so that ``--from-runs`` finds them later."""
    planned = {run.name: run for run in sweep.runs(on_slurm=True)}
    for row in rows:
        run = planned.get(row["run"])
        if run is not None and row["status"] == "submitted":
            row.update(config=run.config, **{f"grid.{k}": json.dumps(v) for k, v in run.overrides.items()})
    write_summary(Path(sweep.output) / "sweep.csv", rows)


def read_sweep_folder(folder: Path, configs: list[str]) -> list[dict[str, Any]]:
    """The rows of every ``sweep*.csv`` in ``folder`` for ``configs``, newest row per run."""
    files = sorted(folder.glob("sweep*.csv"), key=lambda p: p.stat().st_mtime_ns)
    if not files:
        raise DataError(f"--from-runs {folder} has no sweep.csv (write one with adlight sweep)")
    stems = {Path(c).stem for c in configs}
    rows: dict[str, dict[str, Any]] = {}
    for path in files:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                if Path(row.get("config", "")).stem in stems:
                    rows[row["run"]] = row
    return list(rows.values())


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__}, {gpu}")


def main(argv: list[str], runner: Runner) -> Path | None:
    """``adlight benchmark ARGV``; ``runner`` runs one adlight command (the CLI hands it in)."""
    try:
        return _main(list(argv), runner)
    except AdlightError as error:
        print(f"adlight benchmark: error: {error}", file=sys.stderr)
        sys.exit(2)


def _main(argv: list[str], runner: Runner) -> Path | None:
    ns = parse_args(argv)
    table = get_table(ns.table)
    if ns.root is None and ns.from_runs is None:
        raise ConfigError(f"--root is required: the data root of table {table.name}")
    if ns.root is not None and not Path(ns.root).is_dir():
        raise DataError(f"--root {ns.root} is not a folder")
    ns.output = ns.output or ns.from_runs or str(Path("runs/benchmark") / table.name)
    started = time.perf_counter()
    ran_here = not ns.from_runs
    if ns.from_runs:
        folder = Path(ns.from_runs)
        configs = [str(c) for c in _configs(table, ns, Path(ns.root).resolve() if ns.root else None)]
        rows, chosen, ran = read_sweep_folder(folder, configs), {}, f"none (read from {folder})"
        results = _results(table, rows, folder)
    else:
        sweep, chosen = build_sweep(table, ns)
        if ns.dry_run:
            print(f"overrides of every run: {sweep.set}")
            run_sweep(sweep, dry_run=True, reuse=True)
            return None
        total = len(sweep.runs(on_slurm=False))
        rows = run_sweep(sweep, runner, wait=ns.wait, reuse=True,
                         on_row=lambda so_far: write_partial(ns, table, argv, chosen, so_far, total,
                                                             time.perf_counter() - started))
        if any(row["status"] == "submitted" for row in rows):
            _write_submitted(sweep, rows)
            print(f"submitted; when the jobs are done: adlight benchmark {table.name} "
                  f"--from-runs {sweep.output}")
            return None
        fresh = sum(row["status"] != "reused" for row in rows)
        ran = (f"{time.perf_counter() - started:.0f} s for {fresh} runs "
               f"({len(rows) - fresh} reused from earlier)")
        results = _results(table, rows)
    markdown = write_report(ns, table, argv, chosen, results, ran)
    print(markdown.read_text())
    print(f"wrote {markdown} and {markdown.with_suffix('.csv')}")
    if ran_here:  # the table is written with what finished; the command still says runs failed
        exit_on_failed_runs(rows, "adlight benchmark")
    return markdown


def write_report(ns: argparse.Namespace, table: Table, argv: list[str], chosen: dict[str, Any],
                 results: list[RunResult], ran: str, status: str | None = None) -> Path:
    """``TABLE.md`` and ``TABLE.csv`` of ``results``; ``status`` (a partial table) heads both."""
    header = [f"command: adlight benchmark {shlex.join(argv)}",
              f"date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
              f"machine: {machine()}",
              f"wall time of the runs: {ran}",
              f"overrides (budget {ns.budget}, --set): "
              + (", ".join(f"{k}={v}" for k, v in chosen.items()) or "none, the configs' own")]
    if status:
        header.insert(0, f"status: {status}")
    summaries = summarise(table, results)
    markdown, _ = write_table(Path(ns.output), table, summaries, load_paper_numbers(table.name),
                              header, wilcoxon_rows(table, results))
    return markdown


def write_partial(ns: argparse.Namespace, table: Table, argv: list[str], chosen: dict[str, Any],
                  rows: list[dict[str, Any]], total: int, seconds: float) -> Path:
    """The table of the runs finished so far, marked partial, rewritten as each run ends (a
    long table that is stopped still leaves what it measured)."""
    status = (f"PARTIAL, {len(rows)} of {total} runs finished; the table is rewritten as runs "
              "finish and is complete when this line is gone")
    markdown = write_report(ns, table, argv, chosen, _results(table, rows),
                            f"{seconds:.0f} s so far", status)
    print(f"wrote {markdown} (partial: {len(rows)} of {total} runs)", file=sys.stderr, flush=True)
    return markdown
