"""Which source reads a given SOURCE string: files, frame folders, RTSP URLs, webcams, lavfi graphs.

    video.mp4                 a video file (PyAV)                   finite, never drops
    frames/                   a folder of JPEG/PNG frames (DAVIS)   finite, never drops
    rtsp://host:port/path     an RTSP camera                        live: drops stale frames, reconnects
    /dev/video0               a webcam (v4l2)                       live
    lavfi:testsrc=size=...    an FFmpeg filter graph (test source)  unbounded unless the graph ends
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vos.streams.frame_folder import FrameFolder
from vos.streams.source import FrameSource, Skipped, SourceError
from vos.streams.video_file import VideoFile

LAVFI_PREFIX = "lavfi:"
MAX_SKIPS_IN_A_ROW = 25  # unreadable frames in a row after which a file or folder counts as broken


class LiveSettings(BaseModel):
    """How live sources (RTSP cameras, webcams) connect and reconnect: `vos track` flags, `live:` in YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(5.0, gt=0, description="seconds without data before a connection counts as lost")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport")
    reconnect_initial: float = Field(0.5, gt=0, description="seconds before the first reconnect, doubling")
    reconnect_max: float = Field(5.0, gt=0, description="longest wait between reconnects, seconds")
    max_reconnects: int | None = Field(None, ge=0, description="give up after this many failures in a row (default: never)")
    probe: float | None = Field(1.0, gt=0, description="seconds of a live stream FFmpeg reads to probe it (None: FFmpeg's 5 s)")


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


def open_source(
    spec: str, max_frames: int | None = None, name: str | None = None, live: LiveSettings = LiveSettings()
) -> FrameSource:
    """The source for a SOURCE string (not yet opened: `async with` it, or call `open()`, to check it can be read).

    `live` applies to RTSP cameras and webcams.
    """
    if spec.startswith(("rtsp://", "rtsps://", "/dev/video", LAVFI_PREFIX)):
        from vos.streams.live import PyAVSource  # noqa: PLC0415 (PyAV's network stack only when asked for)

        if spec.startswith(LAVFI_PREFIX):
            return PyAVSource(spec[len(LAVFI_PREFIX) :], format="lavfi", live=False, name=name or "lavfi")
        if spec.startswith("/dev/video"):
            return PyAVSource(spec, format="v4l2", live=True, name=name or Path(spec).name, settings=live)
        return PyAVSource(spec, live=True, name=name or "rtsp", settings=live)
    if "://" in spec:
        raise SourceError(f"unsupported source URL {spec!r} (files, folders, rtsp://, /dev/videoN, lavfi:GRAPH)")
    return SequenceSource(spec, max_frames=max_frames, name=name)
