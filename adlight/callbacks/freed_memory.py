"""Keep freed memory in the process during a CPU fit, so each training step does not fault its
activations back in from the kernel.

glibc's ``malloc`` serves blocks over its mmap threshold (128 KiB, raised on the fly up to
32 MiB) with fresh ``mmap`` pages and returns them on ``free``, and it trims the top of the heap
back to the kernel once more than its trim threshold is free there. A training step frees its
activations at the end and allocates the same sizes again in the next one, so every step pays
a page fault and the kernel's zeroing for each 4 KiB of them. On the HAM10000 autoencoder
(batch 64, bf16, 2 threads) that was 11,000 faults per step; with the thresholds below 149,
and the step 7% faster (3% in float32; ``benchmarks/step_page_faults.py``,
``docs/performance.md``). The process keeps its peak
memory instead of giving it back between steps: the peak is reached every step anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import lightning as L
from lightning.pytorch.callbacks import Callback

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling for it on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB free at the top of the heap
#: a user who set any of these chose the allocator's behaviour: leave it alone
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                 "MALLOC_MMAP_MAX_")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; ``True`` when they were set.

    ``False`` (nothing changed) off glibc (macOS, Windows, musl), under another allocator
    preloaded (``LD_PRELOAD`` naming jemalloc or tcmalloc) or when the environment already sets
    glibc's ``MALLOC_*_`` variables.
    """
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    preloaded = os.environ.get("LD_PRELOAD", "")
    if "jemalloc" in preloaded or "tcmalloc" in preloaded or "mimalloc" in preloaded:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 -- only glibc has it (musl has a no-op mallopt)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class KeepFreedMemory(Callback):
    """At a CPU fit's start, :func:`keep_freed_memory` (process-wide, for the rest of the process).

    Part of the recommended CPU setting: ``--trainer.callbacks+=adlight.callbacks.KeepFreedMemory``.
    A fit on a GPU is left alone (its tensors are not glibc's).
    """

    def __init__(self) -> None:
        self.applied = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.strategy.root_device.type == "cpu":
            self.applied = keep_freed_memory()
