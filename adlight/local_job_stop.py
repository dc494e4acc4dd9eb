"""Stopping a sweep that runs its jobs on this machine stops the job it is waiting for.

``adlight sweep --cluster local`` and ``adlight benchmark`` run each fit in a process of
submitit's ``LocalExecutor``, which outlives the sweep: before this, ``kill`` of the sweep (or a
scheduler's stop, a container's shutdown) left that fit training on, its progress unseen, and a
second sweep started with ``--reuse`` resumed the same run from the same ``last.ckpt`` into the
same folder while the first still wrote there. Ctrl-C in a terminal reaches every process of
the group, but a signal sent to the sweep's process alone does not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

# how long a fit gets to end at its step after SIGTERM before it is interrupted: Lightning
# checks for SIGTERM between training steps, and a CPU step of the shipped configs takes
# under 10 s; a fit still in its set-up (loading data) does not look and is interrupted
GRACE_S = 30.0


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """SIGTERM ends this process through its ``finally`` blocks (``SystemExit(143)``), as Ctrl-C
    does, rather than at once; the earlier handler is back afterwards. A no-op off the main
    thread, where Python cannot set a handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def end(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, end)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop_local_job(job: Any, name: str, grace_s: float = GRACE_S, poll_s: float = 0.2) -> None:
    """Stop a running ``LocalExecutor`` job: SIGTERM to submitit's controller (the job id is its
    process id), which passes it to the fit, and Lightning ends the fit at its next step (its
    ``last.ckpt`` stays, for ``--reuse``); submitit's cancel (SIGINT, then SIGKILL) if the job
    is still running after ``grace_s``. Nothing when the job has ended."""
    if job.done():
        return
    print(f"{name}: stopping its run (process {job.job_id})", file=sys.stderr, flush=True)
    with contextlib.suppress(ProcessLookupError, ValueError):
        os.kill(int(job.job_id), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while not job.done() and time.monotonic() < deadline:
        time.sleep(poll_s)
    if not job.done():
        job.cancel(check=False)
