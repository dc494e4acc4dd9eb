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


class _Files:
    @staticmethod
    def wait_for(path: str, timeout: float = 240.0) -> None:
        import time
        from pathlib import Path

        deadline = time.monotonic() + timeout
        while not Path(path).exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} never appeared")
            time.sleep(0.1)


class FailOnceFileAppears(Callback):
    """At the start of training, wait until ``path`` exists, then fail (a run that fails while
    another process's run is under way in the same root)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        _Files.wait_for(self.path)
        raise RuntimeError("failing on purpose while another run is under way")


class SignalThenWait(Callback):
    """At the start of training (its run folder holds only bookkeeping), create ``signal``,
    then wait until ``wait_for`` exists before training on."""

    def __init__(self, signal: str, wait_for: str) -> None:
        self.signal = signal
        self.wait_for = wait_for

    def on_train_start(self, trainer, pl_module) -> None:
        from pathlib import Path

        Path(self.signal).touch()
        _Files.wait_for(self.wait_for)
