"""Freed heap memory goes back to the system before the report: glibc only, a no-op elsewhere."""

from __future__ import annotations

import sys

import pytest

from adlight import process_memory
from adlight.process_memory import release_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_freed_memory_is_released_on_glibc():
    import psutil

    blocks = [bytearray(64 * 1024) for _ in range(8000)]  # 500 MB of heap (below the mmap threshold)
    for block in blocks[1:]:
        block[0] = 1
    keep = blocks[-1]
    before = psutil.Process().memory_info().rss
    del blocks
    assert release_freed_memory() is True
    after = psutil.Process().memory_info().rss
    assert before - after > 200 * 2**20
    assert keep[0] == 1


def test_other_platforms_do_nothing(monkeypatch):
    process_memory._malloc_trim.cache_clear()
    monkeypatch.setattr(sys, "platform", "darwin")
    try:
        assert release_freed_memory() is False
    finally:
        process_memory._malloc_trim.cache_clear()
