"""Masks to disk: a label-map PNG per frame (pixel value = object id) and/or the messages as JSON lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vos.streams.label_map import write_label_map
from vos.streams.messages import MaskMessage

JSONL_NAME = "masks.jsonl"


class FolderSink:
    """Writes `FOLDER/{frame_index:05d}.png` (DAVIS palette PNG) and appends to `FOLDER/masks.jsonl`.

    Each line is flushed as it is written, so an interrupted run keeps every frame it finished.
    """

    def __init__(self, folder: str | Path, png: bool = True, jsonl: bool = True) -> None:
        if not (png or jsonl):
            raise ValueError("a folder sink writes PNGs, JSON lines or both")
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"cannot create output folder {self.folder}: {e}") from None
        self.png = png
        self._lines = open(self.folder / JSONL_NAME, "w", encoding="utf-8") if jsonl else None

    def write(self, message: MaskMessage, labels: np.ndarray) -> None:
        """Blocking: the frame's (H, W) label map and its message."""
        if self.png:
            write_label_map(self.folder / f"{message.frame_index:05d}.png", labels)
        if self._lines is not None:
            self._lines.write(message.model_dump_json() + "\n")
            self._lines.flush()

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()
            self._lines = None
