"""How far a long fit and a table of fits are, and how long they still need (plain Python).

A fit's :class:`adlight.callbacks.RunProgress` writes ``progress.json`` into its run directory
at the end of every training epoch (:func:`write_progress`); a sweep, whose runs may be other
processes, reads the newest one under a run's root (:func:`latest_progress`) and prints one
line per run and for the whole table (:class:`TableProgress`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.json"
#: beside metrics.json: what the run cost (adlight.callbacks.RunCost; read by adlight benchmark)
RUN_COST_FILE = "run_cost.json"


def format_duration(seconds: float | None) -> str:
    """``"45 s"``, ``"12 min"``, ``"3 h 05 min"``; ``"?"`` when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def epoch_eta(epochs_done: int, max_epochs: int | None, seconds: float, epochs_timed: int) -> float | None:
    """Seconds left: the epochs still to go at the mean time of the ``epochs_timed`` so far."""
    if not max_epochs or max_epochs < 0 or epochs_timed <= 0:
        return None
    return max(max_epochs - epochs_done, 0) * seconds / epochs_timed


def write_progress(folder: str | os.PathLike, record: dict[str, Any]) -> Path:
    """``record`` as ``folder/progress.json``, replaced whole (a reader never sees half a file)."""
    path = Path(folder) / PROGRESS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{PROGRESS_FILE}.{os.getpid()}")
    partial.write_text(json.dumps(record) + "\n")
    partial.replace(path)
    return path


def latest_progress(root: str | os.PathLike) -> dict[str, Any] | None:
    """The newest ``progress.json`` under a run's root (its ``version_N`` folders), if any."""
    root = Path(root)
    if not root.is_dir():
        return None
    files = sorted(root.rglob(PROGRESS_FILE), key=lambda p: p.stat().st_mtime_ns)
    for path in reversed(files):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return None


def run_line(record: dict[str, Any] | None) -> str:
    """``"epoch 12/70, 41 s per epoch, about 40 min left"`` from a progress record."""
    if not record:
        return "starting"
    total = record.get("max_epochs")
    done = record.get("epoch", 0)
    line = f"epoch {done}/{total}" if total and total > 0 else f"epoch {done}"
    if record.get("seconds_per_epoch") is not None:
        line += f", {format_duration(record['seconds_per_epoch'])} per epoch"
    if record.get("eta_s") is not None:
        line += f", about {format_duration(record['eta_s'])} left"
    return line


class TableProgress:
    """The ETA of a list of runs done one after another: the runs still to go at the mean wall
    time of the runs finished in this process, plus what the current run's progress says.

    Before any run has finished in this process (the first run, or a table resumed after the
    process was killed) a waiting run is counted as long as the current one will take in all:
    its ``max_epochs`` at its ``seconds_per_epoch``. That is exact for a table of one recipe
    over seeds or classes, and a rough guess for a table of different configs."""

    def __init__(self, total: int, clock=time.monotonic) -> None:
        self.total = total
        self.finished = 0
        self.durations: list[float] = []
        self.clock = clock
        self._started: float | None = None

    def start(self) -> None:
        self._started = self.clock()

    def finish(self, timed: bool = True) -> None:
        """A run ended; ``timed=False`` for one that was reused (it took no time here)."""
        if timed and self._started is not None:
            self.durations.append(self.clock() - self._started)
        self._started = None
        self.finished += 1

    def eta(self, current: dict[str, Any] | None = None) -> float | None:
        waiting = self.total - self.finished - (1 if self._started is not None else 0)
        current_left = None
        if self._started is not None:
            current_left = (current or {}).get("eta_s")
            if current_left is None and self.durations:
                elapsed = self.clock() - self._started
                current_left = max(self._mean() - elapsed, 0.0)
        per_run = self._mean() if self.durations else _projected_run(current)
        if waiting > 0 and per_run is None:
            return None
        rest = waiting * per_run if waiting > 0 else 0.0
        if self._started is not None and current_left is None:
            return None
        return rest + (current_left or 0.0)

    def _mean(self) -> float:
        return sum(self.durations) / len(self.durations) if self.durations else 0.0

    def line(self, name: str, current: dict[str, Any] | None = None) -> str:
        """``"[3/12] zhao/seed=0: epoch 12/70, ..., table: about 3 h 05 min left"``."""
        position = min(self.finished + 1, self.total)
        return (f"[{position}/{self.total}] {name}: {run_line(current)}; "
                f"table: about {format_duration(self.eta(current))} left")


def _projected_run(record: dict[str, Any] | None) -> float | None:
    """A whole run's seconds by its progress record: ``max_epochs`` at ``seconds_per_epoch``."""
    record = record or {}
    epochs, rate = record.get("max_epochs"), record.get("seconds_per_epoch")
    if not epochs or epochs < 0 or rate is None:
        return None
    return epochs * rate
