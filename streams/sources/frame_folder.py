"""A folder of JPEG/PNG frames (the DAVIS layout) as a seekable sequence of RGB frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
MAX_FRAME_PIXELS = 8192 * 8192  # larger frames are refused from their header, before decoding


def read_frame_file(path: Path) -> np.ndarray:
    """An image file as an HxWx3 uint8 RGB array; ValueError naming the file if it cannot be read."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_FRAME_PIXELS:
                raise ValueError(f"{image.width}x{image.height} is larger than {MAX_FRAME_PIXELS} pixels")
            return np.array(image.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read frame {path}: {e}") from e


def _frame_order(path: Path) -> tuple[int, int | str]:
    """Numeric names in numeric order (9 before 10), then the rest by name."""
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.name)


class FrameFolder(Sequence[np.ndarray]):
    """Frames of a folder, sorted by name and read on demand: `folder[i]` is an HxWx3 uint8 RGB array."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"no such folder of frames: {self.folder}")
        self.paths = sorted(
            (p for p in self.folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and p.is_file()), key=_frame_order
        )
        if not self.paths:
            raise ValueError(f"no {'/'.join(FRAME_EXTENSIONS)} frames in {self.folder}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        return read_frame_file(self.paths[index])
