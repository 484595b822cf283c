"""Masks to disk: a label-map PNG per frame (pixel value = object id) and/or the messages as JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import TextIO

import numpy as np

from vos.streams.label_map import write_label_map
from vos.streams.messages import MaskMessage
from vos.streams.sources.base import Frame

JSONL_NAME = "masks.jsonl"


class FolderSink:
    """Writes `FOLDER/{frame_index:05d}.png` (DAVIS palette PNG) and appends to `FOLDER/masks.jsonl`.

        async with FolderSink("out/") as sink:
            await sink.write(frame, message, labels)

    Each line is flushed as it is written, so an interrupted run keeps every frame it finished. A run that wrote no
    frame (it failed first) leaves nothing behind: no empty masks.jsonl, and no folder if it made it.
    """

    def __init__(self, folder: str | Path, png: bool = True, jsonl: bool = True) -> None:
        if not (png or jsonl):
            raise ValueError("a folder sink writes PNGs, JSON lines or both")
        self.folder = Path(folder)
        self.png = png
        self.jsonl = jsonl
        self._lines: TextIO | None = None
        self._made_folder = False
        self._written = 0

    def open(self) -> None:
        """Creates the folder and starts masks.jsonl (ValueError if that is impossible)."""
        try:
            self._made_folder = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.jsonl:
                self._lines = open(self.folder / JSONL_NAME, "w", encoding="utf-8")
        except OSError as e:
            raise ValueError(f"cannot write to output folder {self.folder}: {e}") from None

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()
            self._lines = None
            if not self._written:
                (self.folder / JSONL_NAME).unlink(missing_ok=True)
        if not self._written and self._made_folder:
            with contextlib.suppress(OSError):  # not empty: someone else wrote there
                self.folder.rmdir()

    async def __aenter__(self) -> FolderSink:
        self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def write_blocking(self, message: MaskMessage, labels: np.ndarray) -> None:
        """The frame's (H, W) label map and its message."""
        self._written += 1
        if self.png:
            write_label_map(self.folder / f"{message.frame_index:05d}.png", labels)
        if self._lines is not None:
            self._lines.write(message.model_dump_json() + "\n")
            self._lines.flush()

    async def write(self, frame: Frame, message: MaskMessage, labels: np.ndarray) -> None:
        await asyncio.to_thread(self.write_blocking, message, labels)
