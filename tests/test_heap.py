"""vos.engine.heap: freed heap handed back to the system (glibc), and at most once per interval."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

from vos.engine.heap import HeapTrimmer, trim_heap

glibc = pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "malloc_trim"), reason="not glibc")


def rss_mb() -> float:
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


@glibc
def test_trim_returns_freed_pages_that_glibc_kept():
    """Blocks below the mmap threshold, freed under a live block at the heap's top, stay in RSS until trimmed."""
    blocks = [ctypes.create_string_buffer(64 * 1024) for _ in range(3000)]  # ~190 MB, written (zeroed)
    top = ctypes.create_string_buffer(64 * 1024)  # keeps the heap's top in use: glibc's own trimming stops there
    before = rss_mb()
    del blocks
    kept = rss_mb()
    assert trim_heap()
    after = rss_mb()
    assert before - kept < 50 < kept - after, (before, kept, after)
    del top


def test_trimmer_trims_at_most_once_per_interval(monkeypatch):
    calls = []
    monkeypatch.setattr("vos.engine.heap.trim_heap", lambda: calls.append(1) or True)
    clock = iter([0.0, 1.0, 4.9, 5.1, 6.0, 10.2, 11.0, 99.0])
    monkeypatch.setattr("vos.engine.heap.time.monotonic", lambda: next(clock))
    trimmer = HeapTrimmer(5.0)  # created at 0.0
    for _ in range(5):
        trimmer()
    assert trimmer.trims == len(calls) == 2  # at 5.1 and 10.2
    off = HeapTrimmer(0)
    off()
    assert off.trims == 0
