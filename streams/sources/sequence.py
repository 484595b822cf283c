"""Finite sources read in order: a video file (PyAV) or a folder of frames; unreadable frames are skipped."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vos.streams.sources.base import FrameSource, Skipped, SourceError
from vos.streams.sources.frame_folder import FrameFolder
from vos.streams.sources.video_file import VideoFile

MAX_SKIPS_IN_A_ROW = 25  # unreadable frames in a row after which a file or folder counts as broken


class SequenceSource(FrameSource):
    """A video file or a folder of frames, read in order (at most `max_frames`)."""

    def __init__(self, path: str | Path, max_frames: int | None = None, name: str | None = None) -> None:
        self.path = Path(path)
        super().__init__(name or self.path.stem)
        self.max_frames = max_frames
        self._frames: Sequence[np.ndarray] | None = None
        self._times: list[float] | None = None

    def open(self) -> None:
        if self._frames is not None:
            return
        if not self.path.exists():
            raise SourceError(f"no such file or folder: {self.path}")
        try:
            if self.path.is_dir():
                self._frames = FrameFolder(self.path)
            else:
                video = VideoFile(self.path)
                self._frames, self._times = video, video.times
        except (ValueError, OSError) as e:
            raise SourceError(str(e)) from None

    def close(self) -> None:
        if isinstance(self._frames, VideoFile):
            self._frames.close()
        self._frames = None

    def __len__(self) -> int:
        self.open()
        assert self._frames is not None
        n = len(self._frames)
        return n if self.max_frames is None else min(n, self.max_frames)

    def _decode(self) -> Iterator[tuple[float | None, np.ndarray] | Skipped]:
        """Every frame in order; an unreadable one is skipped, and `MAX_SKIPS_IN_A_ROW` of them end the source."""
        self.open()
        assert self._frames is not None
        in_a_row = 0
        try:
            for i in range(len(self)):
                try:
                    image = self._frames[i]
                except ValueError as e:
                    in_a_row += 1
                    if in_a_row > MAX_SKIPS_IN_A_ROW:
                        raise SourceError(f"{in_a_row} unreadable frames in a row in {self.path}; the last: {e}") from None
                    yield Skipped(str(e))
                    continue
                in_a_row = 0
                yield (None if self._times is None else self._times[i]), image
        finally:
            if isinstance(self._frames, VideoFile):
                self._frames.close()
                self._frames = None
