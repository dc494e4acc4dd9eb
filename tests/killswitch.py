"""A callback that SIGKILLs its own process at a chosen training batch, for resume tests.

SIGKILL cannot be caught: no ``finally``, no ``atexit``, no Lightning teardown runs, exactly
as when a cluster scheduler or the OOM killer ends a job. Used from a subprocess as
``--trainer.callbacks+={"class_path": "killswitch.SigkillAt", "init_args": {"epoch": 2}}``
with ``tests/`` on ``PYTHONPATH``.
"""

import os
import signal

from lightning.pytorch.callbacks import Callback


class SigkillAt(Callback):
    """Kill the process when training epoch ``epoch`` reaches batch ``batch``."""

    def __init__(self, epoch: int, batch: int = 1) -> None:
        self.epoch = epoch
        self.batch = batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGKILL)
