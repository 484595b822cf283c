"""Overlay videos: every processed frame drawn with its masks (`draw_overlay`) and encoded as H.264 (PyAV, libx264).

Shapes: images are (H, W, 3) uint8 RGB, label maps (H, W) integer (pixel value = object id).
`H264Writer` is the encoder alone (also used by `vos render`); `OverlayVideoSink` is the engine's sink.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from vos.streams.messages import MaskMessage
from vos.streams.overlay import OverlayStyle, draw_overlay
from vos.streams.sources.base import Frame

VIDEO_CODEC = "libx264"
PIXEL_FORMAT = "yuv420p"
TIME_BASE = Fraction(1, 90000)
"""Ticks of the written timestamps: 90 kHz (MPEG's clock) is exact for 24, 25, 30, 30000/1001, 50 and 60 frames/s."""
DEFAULT_FPS = 25.0
ENCODER_OPTIONS = {"preset": "veryfast", "crf": "23"}
RATE_WINDOW = 30
"""Frames over which the sink measures the frames/s it shows."""
_IMAGE_FORMATS = {"image2", "image2pipe"}
CONTAINERS = {"mp4": ".mp4", "mov": ".mov", "matroska": ".mkv", "mpegts": ".ts"}
"""FFmpeg's names of the containers written, with a suffix each: they keep every frame's timestamp and state the
rate right (AVI and FLV would state another frame rate than the frames have)."""


def video_format(path: str | Path) -> str | None:
    """The name of the container format FFmpeg picks for `path`'s suffix (None: no video container). Creates nothing."""
    try:
        container = av.open(str(path), "w")
    except (ValueError, av.FFmpegError):
        return None
    try:
        return None if container.format.name in _IMAGE_FORMATS else container.format.name
    finally:
        container.close()


def check_video_path(path: str | Path) -> None:
    """ValueError unless `path` names a writable file in a container that holds H.264; creates the parent folder."""
    path = Path(path)
    name = video_format(path)
    if name is None:
        suffix = f"the suffix {path.suffix!r}" if path.suffix else "a name without a suffix"
        raise ValueError(f"{path}: {suffix} is no video container FFmpeg knows; use {', '.join(CONTAINERS.values())}")
    if name not in CONTAINERS:
        raise ValueError(f"{path}: vos writes H.264 into {', '.join(CONTAINERS.values())} files, not {name}")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
        if not existed:
            path.unlink()
    except OSError as e:
        raise ValueError(f"cannot write the video {path}: {e.strerror or e}") from None


def _even(image: np.ndarray) -> np.ndarray:
    """yuv420p needs an even width and height: an odd one is padded by repeating the last column / row."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


class H264Writer:
    """Blocking: (H, W, 3) uint8 RGB frames -> an H.264 (libx264, yuv420p) file.

        with H264Writer("overlay.mp4") as writer:   # checks the path
            writer.write(image, pts)

    The file is opened on the first frame (its size is the video's; odd sizes are padded to even by
    repeating the last row / column; later frames of another size are resized to it) and flushed and
    closed by `close`; no frame, no file. Timing: frames with `pts` (seconds) keep the source's timing
    (the first frame at 0); frames without are `1 / fps` after the previous one (`fps` default 25). The rate the
    file states is `fps` if given, else that of the first two frames' timestamps (the file opens on the second).
    """

    def __init__(self, path: str | Path, fps: float | None = None) -> None:
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps or DEFAULT_FPS)
        self._rate_given = fps is not None
        self._first: tuple[np.ndarray, float] | None = None  # held until the second frame gives the rate
        self.frames = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._origin: float | None = None
        self._last = -1
        self._durations: dict[int, int] = {}
        self._step = max(1, round(1 / (self.fps * TIME_BASE)))

    def check(self) -> None:
        """ValueError now, before any frame, if the path cannot be written or is no H.264 container."""
        check_video_path(self.path)

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            container = av.open(str(self.path), "w")
            rate = Fraction(self.fps).limit_denominator(10000)
            stream = container.add_stream(VIDEO_CODEC, rate=rate, options=ENCODER_OPTIONS)
        except (ValueError, OSError, av.FFmpegError) as e:
            raise ValueError(f"cannot write the video {self.path}: {e}") from None
        stream.width, stream.height, stream.pix_fmt = width, height, PIXEL_FORMAT
        stream.codec_context.time_base = TIME_BASE
        stream.time_base = TIME_BASE
        self._container, self._stream = container, stream

    def _ticks(self, pts: float | None) -> int:
        """The frame's timestamp in `TIME_BASE` ticks, always after the previous one (a source going back is re-based)."""
        if self._last < 0:
            self._origin = pts
            return 0
        if pts is None or self._origin is None:
            return self._last + self._step
        ticks = round((pts - self._origin) / TIME_BASE)
        if ticks <= self._last:
            ticks = self._last + self._step
            self._origin = pts - ticks * TIME_BASE
        return ticks

    def write(self, image: np.ndarray, pts: float | None = None) -> None:
        """Encodes one (H, W, 3) uint8 RGB frame shown at `pts` seconds (None: 1 / fps after the previous)."""
        image = _even(np.ascontiguousarray(image))
        self.frames += 1
        if self._container is None:
            if pts is not None and self._first is None and not self._rate_given:
                self._first = (image, pts)
                return
            if self._first is not None and pts is not None and pts > self._first[1]:
                self.fps = 1.0 / (pts - self._first[1])
                self._step = max(1, round(1 / (self.fps * TIME_BASE)))
            self._open_with_first(image)
        self._encode(image, pts)

    def _open_with_first(self, image: np.ndarray) -> None:
        """Opens the file at the size of the first frame (held or `image`), and encodes a held one."""
        first, self._first = self._first, None
        size = (first or (image,))[0].shape
        self._open(size[1], size[0])
        if first is not None:
            self._encode(*first)

    def _encode(self, image: np.ndarray, pts: float | None) -> None:
        assert self._container is not None and self._stream is not None
        if image.shape[:2] != (self._stream.height, self._stream.width):
            image = cv2.resize(image, (self._stream.width, self._stream.height), interpolation=cv2.INTER_AREA)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        ticks = self._ticks(pts)
        frame.pts, frame.time_base = ticks, TIME_BASE
        self._durations[ticks] = ticks - self._last if self._last >= 0 else self._step
        self._last = ticks
        self._mux(self._stream.encode(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        """Writes packets with their frame's duration (the interval before it), which the muxer uses for the
        last frame's duration and the frame rate (mp4) that players show."""
        assert self._container is not None
        for packet in packets:
            packet.duration = self._durations.pop(packet.pts, self._step)
            self._container.mux(packet)

    def close(self) -> None:
        """Flushes the encoder and closes the file (nothing to do if no frame came)."""
        if self._first is not None:  # a single frame: the given or default rate
            self._open_with_first(self._first[0])
        if self._container is None:
            return
        try:
            assert self._stream is not None
            self._mux(self._stream.encode())
        finally:
            self._container.close()
            self._container = None

    def __enter__(self) -> H264Writer:
        self.check()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class OverlayVideoSink:
    """A sink drawing each frame's masks (`draw_overlay`) into an H.264 video (`H264Writer`'s rules):

        async with OverlayVideoSink("overlay.mp4") as sink:
            await sink.write(frame, message, labels)

    Captions show the message's object scores; the frame info shows the frame index and, with
    `show_rate`, the frames/s at which frames reach the sink (the engine's processing rate). Drawing
    and encoding run in a worker thread. Entering checks the path (ValueError); leaving flushes and closes.
    """

    def __init__(
        self, path: str | Path, style: OverlayStyle = OverlayStyle(), fps: float | None = None, show_rate: bool = True
    ) -> None:
        self.writer = H264Writer(path, fps)
        self.style = style
        self.show_rate = show_rate
        self._arrivals: deque[float] = deque(maxlen=RATE_WINDOW)

    @property
    def path(self) -> Path:
        return self.writer.path

    def open(self) -> None:
        """Checks the video can be written (ValueError if not); the file itself starts with the first frame."""
        self.writer.check()

    async def __aenter__(self) -> OverlayVideoSink:
        self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.writer.close)

    def _rate(self) -> float | None:
        """Frames/s over the last `RATE_WINDOW` arrivals (None before two)."""
        self._arrivals.append(time.monotonic())
        span = self._arrivals[-1] - self._arrivals[0]
        return (len(self._arrivals) - 1) / span if self.show_rate and span > 0 else None

    def write_blocking(self, frame: Frame, message: MaskMessage, labels: np.ndarray, fps: float | None = None) -> None:
        """Draws and encodes one frame: (H, W, 3) image and its (H, W) label map."""
        scores = {o.id: o.score for o in message.objects}
        classes = {o.id: o.class_name for o in message.objects if o.class_name is not None}
        image = draw_overlay(frame.image, labels, scores, self.style, frame_index=frame.index, fps=fps, classes=classes)
        self.writer.write(image, frame.pts)

    async def write(self, frame: Frame, message: MaskMessage, labels: np.ndarray) -> None:
        await asyncio.to_thread(self.write_blocking, frame, message, labels, self._rate())
