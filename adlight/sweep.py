"""``adlight sweep``: a grid of ``adlight fit`` runs, on SLURM or on this machine one at a time.

A sweep is a list of configs times a grid of overrides, written as a YAML file or given on
the command line (the two combine; the command line adds to the file)::

    # sweep.yaml
    configs: [configs/fadaeinejad/mvtec_ae_l2.yaml, configs/wilmet/mvtec_kd_cae.yaml]
    grid:                               # every combination of these values
      data.category: [bottle, screw]
      seed_everything: [0, 1, 2]
    set: {data.root: /data/mvtec_ad}    # given to every run
    output: runs/sweeps/mvtec           # run i writes into <output>/<config>/<its grid values>
    cluster: auto                       # slurm | local | inprocess | auto (slurm when sbatch exists)
    slurm: {partition: gpu, gpus_per_node: 4, nodes: 1, cpus_per_task: 8, mem_gb: 64,
            timeout_min: 720, array_parallelism: 8, additional_parameters: {account: proj}}

    adlight sweep sweep.yaml --dry-run              # print the runs
    adlight sweep sweep.yaml --cluster local        # run them here, one after another
    adlight sweep --config configs/quickstart.yaml --grid seed_everything=0,1,2 --cluster local

Executors are submitit's (``AutoExecutor``): on SLURM the runs are one job array, each run
on ``nodes x gpus_per_node`` GPUs with one task per GPU, which Lightning's SLURM environment
turns into DDP ranks (``--trainer.devices``/``--trainer.num_nodes`` are set to match). A run
that SLURM stops at its time limit or preempts is requeued with ``--ckpt_path last`` and
resumes from its last epoch. ``local`` runs the same jobs as subprocesses with submitit's
LocalExecutor, one after another (two at once would share the cores), with the same logs
(``<output>/submitit``); ``inprocess`` calls them in this process, without submitit.

When the runs are done (``local``/``inprocess``, or ``--wait`` on SLURM), ``<output>/sweep.csv``
holds one row per run: its status, run directory and test metrics. A finished run leaves its
argument list in ``<run>/sweep_args.json``; with ``--reuse`` a run whose file matches and whose
``metrics.json`` exists is not run again (its row says ``reused``), so a sweep can be resumed,
and a fit killed before its end continues from its ``last.ckpt`` (:func:`resumed`). Local and
in-process runs print an ETA per run and for the sweep (:mod:`adlight.progress`).

The runs are made by a ``runner`` the CLI hands in (:func:`adlight.cli.run`); this module does
not import the CLI. Over 300 lines because the spec, its three executors and the summary are
one feature read together; splitting them would scatter one sweep over files.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import itertools
import json
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adlight.errors import ConfigError
from adlight.local_job_stop import stop_local_job, terminate_raises
from adlight.progress import TableProgress, format_duration, latest_progress

# one ``adlight`` command (its argument list) run in this process: adlight.cli.run
Runner = Callable[[list[str]], None]
# what a finished run leaves in its root: the argument list it ran with (for --reuse)
ARGS_FILE = "sweep_args.json"

CLUSTERS = ("auto", "slurm", "local", "inprocess")
SUMMARY_METRICS = ("image_AUROC", "pixel_AUROC", "image_F1", "pixel_F1", "n_images")
# submitit's names for the SLURM options a sweep file may set
SLURM_OPTIONS = {
    "partition": "slurm_partition", "array_parallelism": "slurm_array_parallelism",
    "additional_parameters": "slurm_additional_parameters", "qos": "slurm_qos",
    "account": "slurm_account", "constraint": "slurm_constraint", "exclude": "slurm_exclude",
    "setup": "slurm_setup", "srun_args": "slurm_srun_args",
    "nodes": "nodes", "gpus_per_node": "gpus_per_node", "cpus_per_task": "cpus_per_task",
    "mem_gb": "mem_gb", "timeout_min": "timeout_min", "name": "name",
}


@dataclass
class SweepRun:
    """One ``adlight`` invocation of the sweep."""

    name: str  # <config stem>/<grid values>, also its folder under the sweep's output
    config: str
    overrides: dict[str, Any]  # this run's grid values
    args: list[str]  # the full ``adlight`` argument list
    root: Path  # its ``--trainer.default_root_dir``


@dataclass
class Sweep:
    configs: list[str]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    set: dict[str, Any] = field(default_factory=dict)
    output: str = "runs/sweep"
    cluster: str = "auto"
    subcommand: str = "fit"
    slurm: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.configs:
            raise ConfigError("a sweep needs at least one config (configs: [...] or --config)")
        for config in self.configs:
            if not Path(config).is_file():
                raise ConfigError(f"sweep config {config} does not exist")
        if self.cluster not in CLUSTERS:
            raise ConfigError(f"cluster must be one of {CLUSTERS}, got {self.cluster!r}")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"grid.{key} must be a non-empty list of values, got {values!r}")
        unknown = sorted(set(self.slurm) - set(SLURM_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown slurm options {unknown}; known: {sorted(SLURM_OPTIONS)}")

    @property
    def gpus(self) -> tuple[int, int]:
        """(nodes, GPUs per node) of every SLURM run."""
        return int(self.slurm.get("nodes", 1)), int(self.slurm.get("gpus_per_node", 0))

    def runs(self, on_slurm: bool) -> list[SweepRun]:
        keys = list(self.grid)
        runs = []
        for config in self.configs:
            for values in itertools.product(*(self.grid[k] for k in keys)):
                point = dict(zip(keys, values, strict=True))
                label = ",".join(f"{k}={_text(v)}" for k, v in point.items()) or "default"
                name = f"{Path(config).stem}/{_safe(label)}"
                # absolute: a SLURM or local job may start in another working directory
                root = Path(self.output).resolve() / name
                args = [self.subcommand, f"--config={Path(config).resolve()}"]
                nodes, gpus = self.gpus
                if on_slurm and gpus > 0:
                    # one SLURM task per GPU: Lightning's SLURMEnvironment makes them DDP ranks
                    args += ["--trainer.accelerator=gpu", f"--trainer.devices={gpus}",
                             f"--trainer.num_nodes={nodes}"]
                    if nodes * gpus > 1:
                        args.append("--trainer.strategy=ddp")
                args.append(f"--trainer.default_root_dir={root}")
                args += [a for k, v in {**self.set, **point}.items() for a in _override_args(k, v)]
                runs.append(SweepRun(name, config, point, args, root))
        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            raise ConfigError(
                "two sweep runs would share a folder: give configs with distinct file names, "
                f"got {self.configs}"
            )
        return runs


class Appends(list):
    """The values of one ``KEY+=VALUE`` override given more than once (``--set
    trainer.callbacks+=A --set trainer.callbacks+=B``): each becomes its own ``--KEY+=VALUE``,
    so the run appends them all instead of keeping the last."""

    def __str__(self) -> str:
        return ", ".join(str(v) for v in self)


def _override_args(key: str, value: Any) -> list[str]:
    """``--key=value`` as the CLI takes it; one per value of :class:`Appends`."""
    values = value if isinstance(value, Appends) else [value]
    return [f"--{key}={_text(v)}" for v in values]


def _text(value: Any) -> str:
    """An override value as the command line spells it (YAML for lists and mappings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", label)


def latest_report(root: Path) -> tuple[Path, dict] | None:
    """The newest ``metrics.json`` under a run's root and its contents."""
    reports = sorted(Path(root).rglob("metrics.json"), key=lambda p: p.stat().st_mtime_ns)
    if not reports:
        return None
    return reports[-1], json.loads(reports[-1].read_text())


try:  # the job class is a submitit Checkpointable when submitit is installed (extra "cluster")
    from submitit.helpers import Checkpointable as _JobBase
except ImportError:  # pragma: no cover - inprocess sweeps need no submitit
    _JobBase = object


class RunFailed(RuntimeError):
    """A run stopped by bad input; the message is the one line that names the problem."""


class SweepJob(_JobBase):
    """Runs one ``adlight`` invocation through ``runner`` and returns its run directory and report.

    ``runner`` is :func:`adlight.cli.run` (handed in by the CLI, so this module does not import
    it); pickled by reference, so a SLURM job imports the CLI where it runs.

    On SLURM, submitit calls :meth:`checkpoint` when the job reaches its time limit or is
    preempted; the job is requeued with ``--ckpt_path last`` so the fit resumes from its
    last epoch (``last.ckpt`` is written every epoch).
    """

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def __call__(self, args: list[str], root: str) -> dict[str, Any]:
        stderr = _ErrorLines(sys.stderr)
        try:
            with contextlib.redirect_stderr(stderr):
                self.runner(list(args))  # bad input raises AdlightError, whose message names the problem
        except SystemExit as exit_:  # the argument parser's errors (printed to stderr) exit 2
            if exit_.code not in (0, None):
                raise RunFailed(stderr.last or f"adlight {' '.join(args)} exited with status {exit_.code}") from None
        except Exception as error:
            from adlight.cli.one_line import adlight_cause, one_line

            # bad input reaches here wrapped by the argument parser; its own line names the
            # problem, and a traceback sent back by submitit then ends with that line
            cause = adlight_cause(error)
            if cause is None:  # a crash: its traceback goes to the run's log, its last line to the row
                traceback.print_exc()
                raise RunFailed(f"{type(error).__name__}: {one_line(error)}") from None
            raise RunFailed(one_line(cause)) from None
        found = latest_report(Path(root))
        if found:  # written last: its presence says the run finished with these arguments
            (Path(root) / ARGS_FILE).write_text(json.dumps(list(args)) + "\n")
        return {"run_dir": str(found[0].parent) if found else "", "report": found[1] if found else {}}

    def checkpoint(self, args: list[str], root: str):  # pragma: no cover - SLURM only
        from submitit.helpers import DelayedSubmission

        resumed = [a for a in args if not a.startswith("--ckpt_path")]
        if resumed[:1] == ["fit"]:
            resumed.append("--ckpt_path=last")
        return DelayedSubmission(self, resumed, root)


class _ErrorLines(io.TextIOBase):
    """stderr passed through, remembering the last ``adlight...: error: ...`` line written."""

    def __init__(self, stream) -> None:
        self.stream, self.last, self._pending = stream, None, ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if re.match(r"adlight( [\w-]+)?: error: ", line):
                self.last = line.split(": error: ", 1)[1]
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    # what a library may ask of sys.stderr (a terminal? its descriptor, its encoding)
    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.stream, "encoding", "utf-8")


def check_runs(runs: list[SweepRun], runner: Runner) -> None:
    """Parse every run's arguments (``--print_config``: nothing is built, read or written) before
    any run starts, so that a bad override stops the sweep with one line, not N failed runs."""
    from adlight.cli.one_line import adlight_cause, one_line

    for run in runs:
        stderr = _ErrorLines(io.StringIO())
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
                runner([*run.args, "--print_config"])
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise ConfigError(f"run {run.name}: {stderr.last or 'its arguments do not parse'} "
                                  "(nothing was launched)") from None
        except Exception as error:  # noqa: BLE001 - named in one line; the run would fail alike
            cause = adlight_cause(error)
            raise ConfigError(f"run {run.name}: {one_line(cause or error)} (nothing was launched)") from None


def _executor(sweep: Sweep, cluster: str):
    import submitit

    folder = Path(sweep.output) / "submitit" / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=None if cluster == "auto" else cluster)
    if executor.cluster == "slurm":
        nodes, gpus = sweep.gpus
        params = {SLURM_OPTIONS[k]: v for k, v in sweep.slurm.items()}
        params.setdefault("name", f"adlight-{Path(sweep.output).name}")
        params["tasks_per_node"] = max(gpus, 1)
        executor.update_parameters(**params)
    else:
        import torch

        # LocalExecutor hides every GPU unless asked for them, and stops a job after
        # timeout_min (5 by default); runs here get this machine's GPUs and a day
        executor.update_parameters(timeout_min=int(sweep.slurm.get("timeout_min", 24 * 60)),
                                   gpus_per_node=torch.cuda.device_count(), tasks_per_node=1)
    return executor


def finished_report(run: SweepRun) -> tuple[Path, dict] | None:
    """The report of an earlier run with the same arguments in the same folder, if it finished."""
    args_file = run.root / ARGS_FILE
    try:
        if _without_resume(json.loads(args_file.read_text())) != _without_resume(run.args):
            return None
    except (OSError, ValueError):
        return None
    return latest_report(run.root)


def _without_resume(args: list[str]) -> list[str]:
    """An argument list without ``--ckpt_path``: a run resumed from its ``last.ckpt`` is the
    same run as one that went through in one go."""
    return [a for a in args if not a.startswith("--ckpt_path")]


def resumed(run: SweepRun) -> SweepRun:
    """``run`` continued from the newest ``last.ckpt`` an earlier, killed attempt left in its
    folder (``--ckpt_path=last``, which the CLI resolves over the earlier versions); the run
    itself when it is no fit, names its own checkpoint or has none to continue from."""
    from adlight.callbacks.resume import find_last_checkpoint

    if run.args[:1] != ["fit"] or any(a.startswith("--ckpt_path") for a in run.args):
        return run
    found = find_last_checkpoint(run.root)
    if found is None:
        return run
    print(f"{run.name}: resuming from {found}", file=sys.stderr, flush=True)
    return dataclasses.replace(run, args=[*run.args, "--ckpt_path=last"])


def _wait_with_progress(job, run: SweepRun, table: TableProgress, poll_s: float = 2.0):
    """``job.result`` of a run in another process, printing its progress line (its epoch, its
    ETA and the table's) whenever its ``progress.json`` changes (looked at every ``poll_s``)."""
    shown: Any = False
    while not job.done():
        record = latest_progress(run.root)
        if record != shown:
            print(table.line(run.name, record), file=sys.stderr, flush=True)
            shown = record
        time.sleep(poll_s)
    return job.result()


def run_sweep(sweep: Sweep, runner: Runner | None = None, dry_run: bool = False,
              wait: bool = False, reuse: bool = False,
              on_row: Callable[[list[dict[str, Any]]], None] | None = None) -> list[dict[str, Any]]:
    """Run (or print, ``dry_run``) every run of ``sweep`` with ``runner``; one summary row per run.

    ``reuse``: a run that already finished with the same arguments is not run again, and a fit
    that an earlier attempt left with a ``last.ckpt`` continues from it. ``on_row``: called with
    the rows so far (in the sweep's order) each time a local or in-process run ends.
    """
    cluster = sweep.cluster
    if cluster == "auto":
        cluster = "slurm" if _slurm_available() else "local"
    runs = sweep.runs(on_slurm=cluster == "slurm")
    order = {run.name: index for index, run in enumerate(runs)}  # rows in the sweep's order
    reused: list[dict[str, Any]] = []
    if reuse:
        finished = {run.name: finished_report(run) for run in runs}
        for run in runs:
            if finished[run.name]:
                reused.append(_row(run, lambda found=finished[run.name]: {
                    "run_dir": str(found[0].parent), "report": found[1]}, status="reused"))
        runs = [resumed(run) for run in runs if not finished[run.name]]
    if dry_run:
        for row in reused:
            print(f"{row['run']}: reused ({row['run_dir']})")
        for run in runs:
            print(f"{run.name}: adlight {' '.join(run.args)}")
        planned = [{"run": r.name, "status": "planned", "args": " ".join(r.args)} for r in runs]
        return sorted(reused + planned, key=lambda row: order[row["run"]])
    if runner is None:
        raise ConfigError("run_sweep needs a runner (adlight.cli.run) unless dry_run")

    if runs:
        check_runs(runs, runner)
    rows: list[dict[str, Any]] = reused
    table = TableProgress(len(reused) + len(runs))
    table.finished = len(reused)
    if cluster == "inprocess":
        for run in runs:
            table.start()
            print(table.line(run.name), file=sys.stderr, flush=True)
            rows.append(_row(run, lambda run=run: SweepJob(runner)(run.args, str(run.root))))
            _row_done(table, rows, order, on_row)
    elif cluster == "slurm":
        executor = _executor(sweep, cluster)
        with executor.batch():  # one job array
            jobs = [executor.submit(SweepJob(runner), run.args, str(run.root)) for run in runs]
        for run, job in zip(runs, jobs, strict=True):
            print(f"submitted {run.name} as SLURM job {job.job_id}")
        if not wait:
            submitted = [{"run": r.name, "status": "submitted", "job_id": j.job_id}
                         for r, j in zip(runs, jobs, strict=True)]
            return sorted(reused + submitted, key=lambda row: order[row["run"]])
        rows += [_row(run, job.result, job) for run, job in zip(runs, jobs, strict=True)]
    else:
        executor = _executor(sweep, cluster)
        job, run = None, None
        try:
            with terminate_raises():
                for run in runs:  # one after another: submit the next when the last is done
                    table.start()
                    job = executor.submit(SweepJob(runner), run.args, str(run.root))
                    rows.append(_row(run, lambda job=job, run=run: _wait_with_progress(job, run, table),
                                     job))
                    _row_done(table, rows, order, on_row)
        finally:  # killed or interrupted: the run in its own process stops too
            if job is not None:
                stop_local_job(job, run.name)
    rows.sort(key=lambda row: order[row["run"]])
    write_summary(Path(sweep.output) / "sweep.csv", rows)
    return rows


def _row_done(table: TableProgress, rows: list[dict[str, Any]], order: dict[str, int],
              on_row: Callable[[list[dict[str, Any]]], None] | None) -> None:
    """A local or in-process run ended: the table's ETA, then ``on_row`` (a partial table)."""
    table.finish()
    print(f"{table.finished}/{table.total} runs done; about {format_duration(table.eta())} left",
          file=sys.stderr, flush=True)
    if on_row is not None:
        on_row(sorted(rows, key=lambda row: order[row["run"]]))


def _row(run: SweepRun, result, job=None, status: str = "done") -> dict[str, Any]:
    row: dict[str, Any] = {"run": run.name, "config": run.config,
                           **{f"grid.{k}": _text(v) for k, v in run.overrides.items()}}
    if job is not None:
        row["job_id"] = job.job_id
    try:
        outcome = result()
    except Exception as error:  # a failed run is a row of the summary, not the end of the sweep
        message = str(error).strip().splitlines()
        # submitit hands back the job's traceback as text, the log paths on its last lines
        marked = [line.split(f"{RunFailed.__name__}: ", 1)[1] for line in message
                  if f"{RunFailed.__name__}: " in line]
        message = marked or message
        row.update(status="failed", error=message[-1] if message else type(error).__name__)
        if job is not None:
            row["log"] = str(job.paths.stderr)
        print(f"{run.name}: failed: {row['error']}", file=sys.stderr)
        return row
    row.update(status=status, run_dir=outcome["run_dir"])
    for key in SUMMARY_METRICS:
        if key in outcome["report"]:
            row[key] = outcome["report"][key]
    print(f"{run.name}: {status}, " + ", ".join(f"{k} {row[k]:.4g}" for k in SUMMARY_METRICS
                                            if isinstance(row.get(k), float)))
    return row


def write_summary(path: Path, rows: list[dict[str, Any]]) -> Path:
    """One CSV row per run; a summary already there is kept (``sweep-1.csv``, ...)."""
    from adlight.callbacks.report import unique_path

    path.parent.mkdir(parents=True, exist_ok=True)
    path = unique_path(path)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")
    return path


def _slurm_available() -> bool:
    import shutil

    return shutil.which("sbatch") is not None


def _parse_pairs(items: list[str], flag: str, split_values: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} takes key=value, got {item!r}")
        if split_values:
            if not value.strip() or any(not v.strip() for v in value.split(",")):
                # an empty value would run with null (an unseeded run for seed_everything)
                raise ConfigError(f"{flag} {item!r}: {key} has an empty value; give {key}=V1,V2,...")
            out[key] = [yaml.safe_load(v) for v in value.split(",")]
        elif key.endswith("+") and key in out:  # an append given again: keep every value
            earlier = out[key]
            out[key] = Appends([*(earlier if isinstance(earlier, Appends) else [earlier]),
                                yaml.safe_load(value)])
        else:
            out[key] = yaml.safe_load(value)
    return out


def parse_args(argv: list[str]) -> tuple[Sweep, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        prog="adlight sweep", description="Run a grid of adlight runs on SLURM or locally.")
    parser.add_argument("spec", nargs="?", help="sweep YAML file (configs, grid, set, output, ...)")
    parser.add_argument("--config", action="append", default=[], help="an experiment config (repeatable)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="values of one override to sweep (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override given to every run (repeatable)")
    parser.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a SLURM option, one of {sorted(SLURM_OPTIONS)} (repeatable)")
    parser.add_argument("--output", help="folder of the sweep's runs and logs")
    parser.add_argument("--cluster", choices=CLUSTERS, help="where to run (default: auto)")
    parser.add_argument("--subcommand", choices=("fit", "validate", "test", "predict"))
    parser.add_argument("--dry-run", action="store_true", help="print the runs, run nothing")
    parser.add_argument("--wait", action="store_true", help="SLURM: wait and write sweep.csv")
    parser.add_argument("--reuse", action="store_true",
                        help="skip runs that already finished with the same arguments")
    ns = parser.parse_args(argv)

    spec: dict[str, Any] = {}
    if ns.spec:
        path = Path(ns.spec)
        if not path.is_file():
            raise ConfigError(f"sweep file {path} does not exist")
        spec = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(spec) - {"configs", "grid", "set", "output", "cluster", "subcommand", "slurm"})
        if unknown:
            raise ConfigError(f"{path}: unknown keys {unknown}")
    spec["configs"] = list(spec.get("configs") or []) + ns.config
    spec["grid"] = {**(spec.get("grid") or {}), **_parse_pairs(ns.grid, "--grid", True)}
    spec["set"] = {**(spec.get("set") or {}), **_parse_pairs(ns.set, "--set", False)}
    spec["slurm"] = {**(spec.get("slurm") or {}), **_parse_pairs(ns.slurm, "--slurm", False)}
    for key in ("output", "cluster", "subcommand"):
        if getattr(ns, key):
            spec[key] = getattr(ns, key)
    return Sweep(**spec), ns


def main(argv: list[str], runner: Runner) -> list[dict[str, Any]]:
    """``adlight sweep ARGV``; ``runner`` runs one adlight command (``adlight.cli`` hands it in)."""
    try:
        sweep, ns = parse_args(list(argv))
        rows = run_sweep(sweep, runner, dry_run=ns.dry_run, wait=ns.wait, reuse=ns.reuse)
    except ConfigError as error:
        print(f"adlight sweep: error: {error}", file=sys.stderr)
        sys.exit(2)
    exit_on_failed_runs(rows, "adlight sweep")
    return rows


def exit_on_failed_runs(rows: list[dict[str, Any]], command: str) -> None:
    """Each failed run's one-line reason, and exit 1 when there is any."""
    failed = [row for row in rows if row.get("status") == "failed"]
    if not failed:
        return
    print(f"{command}: {len(failed)} of {len(rows)} runs failed:", file=sys.stderr)
    for row in failed:
        print(f"  {row['run']}: {row.get('error', 'failed')}", file=sys.stderr)
    sys.exit(1)

