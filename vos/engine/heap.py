"""Freed heap handed back to the system, so a long-running engine's RSS follows what it holds.

glibc keeps what Python, numpy and torch free in its heaps (an arena per allocating thread, up to 8 per
core) and gives memory back to the system only from the top of a heap, or blocks above its mmap
threshold (raised to 32 MB in our CPU Docker image, for speed). Frames, masks and per-prompt tensors of
many sizes, allocated and freed in several threads (decoder, inference, encoding), leave free pages in
the middle of the heaps that RSS, and the OOM killer, still count. `malloc_trim(0)` releases them in every
arena; it takes about a millisecond, so the engine calls it at most every `heap_trim_interval` seconds
(`EngineConfig`). Without glibc (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import functools
import time


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def trim_heap() -> bool:
    """Returns every arena's free pages to the system (`malloc_trim(0)`); False where that is not glibc's."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class HeapTrimmer:
    """`trimmer()` trims the heap when `interval` seconds have passed since it last did (0: never)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.trims = 0
        self._last = time.monotonic()

    def __call__(self) -> None:
        now = time.monotonic()
        if self.interval <= 0 or now - self._last < self.interval:
            return
        self._last = now
        self.trims += trim_heap()
