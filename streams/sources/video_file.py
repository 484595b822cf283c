"""A video file as a seekable sequence of RGB frames (PyAV, which bundles FFmpeg).

Opening the file demuxes it once, without decoding, to list every frame's presentation
time; `video[i]` then decodes frame i: straight on from the previous frame when reading in
order, otherwise by seeking to the keyframe before it and decoding forward.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
"""FFmpeg's decoders that draw a text file's characters as frames: its tty demuxer takes any text file as a video."""


def is_text(container: av.container.InputContainer) -> bool:
    """Whether the container's first video stream is text drawn as frames rather than a video."""
    return container.streams.video[0].codec_context.name in TEXT_CODECS


class VideoFile(Sequence[np.ndarray]):
    """The frames of the first video stream of a file; `video[i]` is an HxWx3 uint8 RGB array."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no such video file: {self.path}")
        try:
            self._container = av.open(str(self.path))
        except av.FFmpegError as e:
            raise ValueError(f"cannot open {self.path} as a video: {e}") from e
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"{self.path} has no video stream")
        if is_text(self._container):
            self._container.close()
            raise ValueError(f"{self.path} is a text file, not a video")
        self._stream = self._container.streams.video[0]
        self.time_base: Fraction = self._stream.time_base
        self.pts = self._index()
        if not self.pts:
            self.close()
            raise ValueError(f"{self.path} has no video frames")
        self._decoder = None
        self._next = None  # index of the frame the running decoder yields next

    def _index(self) -> list[int]:
        """Presentation times of every frame (in `time_base` units), in display order."""
        pts = []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size and packet.pts is not None:
                    pts.append(packet.pts)
        except av.FFmpegError as e:
            self.close()
            raise ValueError(f"cannot read {self.path}: {e}") from e
        self._container.seek(0, stream=self._stream)
        return sorted(pts)

    @property
    def times(self) -> list[float]:
        """Presentation time of each frame, in seconds."""
        return [float(p * self.time_base) for p in self.pts]

    def __len__(self) -> int:
        return len(self.pts)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} is outside the video (0..{len(self) - 1})")
        if self._next != index:
            self._container.seek(self.pts[index], stream=self._stream, backward=True, any_frame=False)
            self._decoder = self._container.decode(self._stream)
        target = self.pts[index]
        try:
            for frame in self._decoder:
                if frame.pts is None or frame.pts < target:
                    continue
                self._next = bisect.bisect_right(self.pts, frame.pts)
                return frame.to_ndarray(format="rgb24")
        except av.FFmpegError as e:
            self._next = None
            raise ValueError(f"cannot decode frame {index} of {self.path}: {e}") from e
        self._next = None
        raise ValueError(f"frame {index} of {self.path} could not be decoded")

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
