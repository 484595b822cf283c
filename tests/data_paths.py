"""Where the tests find DAVIS 2016: $VOS_DAVIS_ROOT if set, else the subset in tests/data (no torch here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DEFAULT_DAVIS = Path(__file__).resolve().parent / "data" / "davis2016-val"


def davis_root() -> Path:
    """$VOS_DAVIS_ROOT, else tests/data/davis2016-val."""
    return Path(os.environ.get("VOS_DAVIS_ROOT") or DEFAULT_DAVIS)


def require_davis(*parts: str) -> Path:
    """The DAVIS root if it holds every path in `parts`; else skip the test, or fail it where $CI is set."""
    root = davis_root()
    missing = [p for p in parts if not (root / p).exists()]
    if missing:
        message = f"DAVIS test data not found: {', '.join(missing)} under {root} (tests/data, or $VOS_DAVIS_ROOT)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)
    return root
