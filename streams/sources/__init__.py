"""Which source reads a given SOURCE string: files, frame folders, RTSP URLs, webcams, lavfi graphs.

    video.mp4                 a video file (PyAV)                   finite, never drops
    frames/                   a folder of JPEG/PNG frames (DAVIS)   finite, never drops
    rtsp://host:port/path     an RTSP camera                        live: drops stale frames, reconnects
    /dev/video0               a webcam (v4l2)                       live
    lavfi:testsrc=size=...    an FFmpeg filter graph (test source)  unbounded unless the graph ends
"""

from __future__ import annotations

from pathlib import Path

from vos.streams.sources.base import FrameSource, SourceError
from vos.streams.sources.live import LiveSettings, PyAVSource
from vos.streams.sources.sequence import SequenceSource

__all__ = ["LiveSettings", "SequenceSource", "open_source"]

LAVFI_PREFIX = "lavfi:"


def open_source(
    spec: str, max_frames: int | None = None, name: str | None = None, live: LiveSettings = LiveSettings()
) -> FrameSource:
    """The source for a SOURCE string (not yet opened: `async with` it, or call `open()`, to check it can be read).

    `live` applies to RTSP cameras and webcams.
    """
    if spec.startswith(("rtsp://", "rtsps://", "/dev/video", LAVFI_PREFIX)):
        if spec.startswith(LAVFI_PREFIX):
            return PyAVSource(spec[len(LAVFI_PREFIX) :], format="lavfi", live=False, name=name or "lavfi")
        if spec.startswith("/dev/video"):
            return PyAVSource(spec, format="v4l2", live=True, name=name or Path(spec).name, settings=live)
        return PyAVSource(spec, live=True, name=name or "rtsp", settings=live)
    if "://" in spec:
        raise SourceError(f"unsupported source URL {spec!r} (files, folders, rtsp://, /dev/videoN, lavfi:GRAPH)")
    return SequenceSource(spec, max_frames=max_frames, name=name)
