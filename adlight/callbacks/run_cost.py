"""What a run cost: ``run_cost.json`` beside ``metrics.json`` (fit and test seconds, peak RSS).

``adlight benchmark develop`` adds this callback to every run (``--trainer.callbacks+=
adlight.callbacks.RunCost``) and reads the file into its table. The peak resident memory is
the process's (``getrusage``): a run in its own process (the sweep's ``local`` executor,
the default) measures that run alone; runs sharing one process (``inprocess``) report the
largest so far. Wall-clock seconds, so they say "under load" on a busy machine.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from adlight.progress import RUN_COST_FILE


def peak_rss_bytes() -> int | None:
    """The process's peak resident memory in bytes (``None`` where getrusage is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # kilobytes on Linux


class RunCost(Callback):
    """Times ``fit`` and ``test`` and writes ``run_cost.json`` into the run's folder after each."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self._started["fit"] = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module) -> None:
        self._stop("fit", trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module) -> None:
        self._started["test"] = time.perf_counter()

    def on_test_end(self, trainer: L.Trainer, pl_module) -> None:
        self._stop("test", trainer)

    def _stop(self, stage: str, trainer: L.Trainer) -> None:
        started = self._started.pop(stage, None)
        if started is not None:
            self.seconds[stage] = time.perf_counter() - started
        directory = Path(trainer.log_dir or trainer.default_root_dir)  # every rank: a broadcast
        if not trainer.is_global_zero:
            return
        directory.mkdir(parents=True, exist_ok=True)
        cost = {f"{name}_seconds": round(value, 3) for name, value in self.seconds.items()}
        cost["peak_rss_bytes"] = peak_rss_bytes()
        (directory / RUN_COST_FILE).write_text(json.dumps(cost, indent=2) + "\n")
