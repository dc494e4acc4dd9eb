"""One line per training epoch with the run's ETA, and ``progress.json`` for a sweep to read."""

from __future__ import annotations

import sys
import time

import lightning as L
from lightning.pytorch.callbacks import Callback

from adlight.progress import epoch_eta, run_line, write_progress


class RunProgress(Callback):
    """At the end of every training epoch: ``epoch 12/70, 41 s per epoch, about 40 min left``
    on stderr and the same numbers in ``<log_dir>/progress.json`` (rank zero only).

    The rate is the mean over the epochs this process trained (validation included), so a
    resumed fit does not count the epochs its checkpoint brought. ``print_lines=False`` keeps
    the file and drops the line (a progress bar already shows the epoch).
    """

    def __init__(self, print_lines: bool = True) -> None:
        self.print_lines = print_lines
        self._started: float | None = None
        self._first_epoch = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()
        self._first_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is None or trainer.sanity_checking:
            return
        log_dir = trainer.log_dir  # broadcasts under DDP: every rank must ask
        if not trainer.is_global_zero:
            return
        done = trainer.current_epoch + 1
        timed = done - self._first_epoch
        seconds = time.monotonic() - self._started
        max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        record = {"epoch": done, "max_epochs": max_epochs, "elapsed_s": round(seconds, 3),
                  "seconds_per_epoch": round(seconds / timed, 3) if timed > 0 else None,
                  "eta_s": epoch_eta(done, max_epochs, seconds, timed), "time": time.time()}
        if log_dir is not None:
            write_progress(log_dir, record)
        if self.print_lines:
            print(run_line(record), file=sys.stderr, flush=True)
