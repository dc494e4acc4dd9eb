"""One line per training epoch with the run's ETA, and ``progress.json`` for a sweep to read."""

from __future__ import annotations

import statistics
import sys
import time

import lightning as L
from lightning.pytorch.callbacks import Callback

from adlight.progress import epoch_eta, run_line, write_progress


class RunProgress(Callback):
    """At the end of every training epoch: ``epoch 12/70, 41 s per epoch, about 40 min left``
    on stderr and the same numbers in ``<log_dir>/progress.json`` (rank zero only).

    The rate is the median time of the epochs this process trained (from one epoch's end to
    the next, validation included), so a resumed fit does not count the epochs its checkpoint
    brought, and a stretch of paused or crowded epochs (a long run stopped while a test suite
    runs) does not stretch the ETA of every epoch after it, as a mean would.
    ``print_lines=False`` keeps the file and drops the line (a progress bar already shows the
    epoch).
    """

    def __init__(self, print_lines: bool = True) -> None:
        self.print_lines = print_lines
        self._started: float | None = None
        self._last: float | None = None
        self._durations: list[float] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = self._last = time.monotonic()
        self._durations = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is None or trainer.sanity_checking:
            return
        log_dir = trainer.log_dir  # broadcasts under DDP: every rank must ask
        if not trainer.is_global_zero:
            return
        now = time.monotonic()
        self._durations.append(now - self._last)
        self._last = now
        done = trainer.current_epoch + 1
        per_epoch = statistics.median(self._durations)
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        record = {"epoch": done, "max_epochs": max_epochs, "elapsed_s": round(now - self._started, 3),
                  "seconds_per_epoch": round(per_epoch, 3),
                  "eta_s": epoch_eta(done, max_epochs, seconds=per_epoch, epochs_timed=1), "time": time.time()}
        if log_dir is not None:
            write_progress(log_dir, record)
        if self.print_lines:
            print(run_line(record), file=sys.stderr, flush=True)
