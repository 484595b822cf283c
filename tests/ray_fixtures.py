"""Ray in tests: skip where it is not installed (fail in CI, which installs it), find actor processes to kill."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def ray_or_skip():
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray missing: scripts/install-dev.sh installs the [ray] extra")
        pytest.skip("Ray not installed (pip install -e '.[ray]')")


def ray_pids(title: str) -> list[int]:
    """Processes whose title Ray set to `title`, e.g. "ray::TrackWorker.track" (an actor running that call)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and title.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            pass
    return pids
