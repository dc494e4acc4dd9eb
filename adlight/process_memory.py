"""Freed memory goes back to the operating system: large buffers are mapped, not kept in the heap.

glibc serves an allocation above its mmap threshold with its own mapping, returned to the
system on free; below it, from the heap, whose freed space the process keeps. The threshold
starts at 128 kB but rises to the largest block freed (up to 32 MB), so after the first batch
of images every 12 MB batch and feature map comes from the heap, and the resident memory of a
fit + test holds freed batches. Measured on PatchCore at 512 px (``benchmarks/patch_mvtec.py
--config configs/patch_features/mvtec_patchcore_512.yaml``): peak RSS 2.61 GB with glibc's
default, 2.12 GB with a fixed 1 MB threshold, at no measurable cost in time. Other C libraries
(macOS, musl) are left as they are, and so is a threshold the user set
(``MALLOC_MMAP_THRESHOLD_``).
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h
THRESHOLD_BYTES = 1 << 20


def map_large_allocations(threshold: int = THRESHOLD_BYTES) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes; whether it was set."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # not glibc
        return False
