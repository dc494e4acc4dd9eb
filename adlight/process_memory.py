"""Hand the heap's freed memory back to the operating system before a large computation.

glibc keeps freed heap memory for reuse: after a fit or test loop, the resident memory still
holds every freed batch, and the test report's one sort of every pixel (about 0.6 GB at
512 px) comes on top. ``malloc_trim(0)`` returns those free pages, in milliseconds. Measured
on PatchCore at 512 px (``benchmarks/patch_mvtec.py --config
configs/patch_features/mvtec_patchcore_512.yaml``, docs/results.md): peak RSS 2.35 -> 1.9x
GB, no change in time. A fixed 1 MB mmap threshold (``mallopt``) cut the peak as much but made
every large allocation a fresh mapping: fit + test 31 -> 46 s. Other C libraries (macOS,
musl) have no ``malloc_trim``; there this does nothing.
"""

from __future__ import annotations

import ctypes
import sys
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_freed_memory() -> bool:
    """``malloc_trim(0)`` where glibc has it; whether it ran."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def available_bytes(device=None) -> int | None:
    """Memory a computation on ``device`` can still take: the GPU's free memory, or the system's
    ``MemAvailable``; ``None`` where it cannot be known (another OS)."""
    if device is not None and getattr(device, "type", str(device)).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None
