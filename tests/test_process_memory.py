"""The CLI's mmap threshold: set on glibc, never over a threshold the user chose."""

from __future__ import annotations

import sys

import pytest

from adlight.process_memory import map_large_allocations


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_threshold_is_set_on_glibc_and_left_alone_when_the_user_set_one(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert map_large_allocations() is True
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert map_large_allocations() is False


def test_other_platforms_are_left_as_they_are(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert map_large_allocations() is False
