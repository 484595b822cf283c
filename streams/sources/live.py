"""Any FFmpeg input as a frame source (PyAV): RTSP cameras, webcams (v4l2), lavfi test graphs.

Timeouts, as verified with PyAV 18.1 / FFmpeg 8.1 (libavformat 62):

- the RTSP demuxer's `timeout` option is the socket I/O timeout in MICROSECONDS (`stimeout`, its
  old name, is gone and, like any unknown option, silently ignored; so is `rw_timeout` by RTSP).
  A server that accepts the connection and never answers fails `av.open` after about `timeout`;
  a stream that stalls mid-way fails the read after about twice `timeout` (TimeoutError).
- `av.open(..., timeout=(open_s, read_s))` installs an interrupt callback that works for every
  protocol: `open_s` bounds `avformat_open_input` and then, afresh, the stream probing;
  `read_s` bounds each packet read (ExitError, "Immediate exit requested").

Both are set from `LiveSettings.timeout`, so a dead or stalled source raises instead of hanging. FFmpeg
reports an RTSP answer that never came as "Invalid data found when processing input"; such
failures are reported here as "nothing received within N s".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Literal
from urllib.parse import urlsplit

import av
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vos.streams.redact import redact
from vos.streams.sources.base import FrameSource, SourceError
from vos.streams.sources.video_file import is_text

MICROSECONDS = 1_000_000
RTSP_SCHEMES = ("rtsp", "rtsps")
NETWORK_SCHEMES = (*RTSP_SCHEMES, "rtmp", "rtmps", "http", "https", "srt", "udp", "tcp")


class LiveSettings(BaseModel):
    """How live sources (RTSP cameras, webcams) connect and reconnect: `vos track` flags, `live:` in YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(5.0, gt=0, description="seconds without data before a connection counts as lost")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport")
    reconnect_initial: float = Field(0.5, gt=0, description="seconds before the first reconnect, doubling")
    reconnect_max: float = Field(5.0, gt=0, description="longest wait between reconnects, seconds")
    max_reconnects: int | None = Field(None, ge=0, description="give up after this many failures in a row (default: never)")
    probe: float | None = Field(1.0, gt=0, description="seconds of a live stream FFmpeg reads to probe it (None: FFmpeg's 5 s)")


class PyAVSource(FrameSource):
    """Frames of the first video stream of an FFmpeg input: a URL, a device or a lavfi graph.

    Live sources (everything but lavfi, unless `live` says otherwise) keep only the newest
    frame and treat an error or end of stream as a disconnect: they reconnect with exponential
    backoff (`settings.reconnect_initial` doubling up to `reconnect_max`), forever, or until
    `max_reconnects` attempts in a row have failed (then SourceError). Frame indices keep
    counting across reconnects; presentation times may restart from 0 on the new connection.
    `settings.timeout` bounds connecting and each read (a stalled RTSP stream is noticed after
    about twice that); `settings.probe` delays every (re)connection by up to that much, and the
    probed frames then arrive at once and all but the newest are dropped.
    """

    def __init__(
        self,
        url: str,
        *,
        format: str | None = None,
        live: bool | None = None,
        options: dict[str, str] | None = None,
        settings: LiveSettings = LiveSettings(),
        name: str | None = None,
    ) -> None:
        """`format`: FFmpeg input format ("v4l2", "lavfi"; guessed for /dev/video*, else probed).
        `options`: demuxer options, over the defaults built here."""
        self.display_url = redact(url)  # for every text that leaves: status, errors, logs
        super().__init__(name or self.display_url)
        self.url = url
        self.format = format or ("v4l2" if url.startswith("/dev/video") else None)
        self.live = self.format != "lavfi" if live is None else live
        if self.live:
            self.buffer_size = 1
        self.settings = settings
        self.options = self._default_options() | (options or {})
        self._container: av.container.InputContainer | None = None

    def _default_options(self) -> dict[str, str]:
        options = {}
        s = self.settings
        if urlsplit(self.url).scheme in RTSP_SCHEMES:
            options["rtsp_transport"] = s.rtsp_transport
            options["timeout"] = str(round(s.timeout * MICROSECONDS))
        if self.live and s.probe is not None:
            options["analyzeduration"] = str(round(s.probe * MICROSECONDS))
        return options

    def open(self) -> None:
        """Connects (blocking); the connection is kept for the first `frames()`."""
        if self._container is None:
            self._container = self._connect()

    def close(self) -> None:
        """Releases a connection made by `open()` and not used yet."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def _connect(self) -> av.container.InputContainer:
        """Opens the input and checks it has a video stream; SourceError with a readable reason if not."""
        verb = "connect to" if urlsplit(self.url).scheme in NETWORK_SCHEMES else "open"
        started = time.monotonic()
        try:
            container = av.open(
                self.url, format=self.format, container_options=self.options, timeout=(self.settings.timeout, self.settings.timeout)
            )
        except av.FFmpegError as e:
            raise SourceError(f"cannot {verb} {self.display_url}: {self._reason(e, started)}") from e
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.display_url} has no video stream")
        if is_text(container):
            container.close()
            raise SourceError(f"{self.display_url} is a text file, not a video")
        return container

    def _reason(self, error: av.FFmpegError, started: float) -> str:
        """What went wrong, in words; a timeout, whatever FFmpeg called it, says so."""
        if isinstance(error, (av.error.ExitError, av.error.TimeoutError)) or (
            time.monotonic() - started >= self.settings.timeout
        ):
            return f"nothing received within {self.settings.timeout:g} s"
        return redact(error.strerror or str(error))

    def _frames(self, container: av.container.InputContainer) -> Iterator[tuple[float | None, np.ndarray]]:
        """Decodes until end of stream; a packet the decoder rejects is skipped, a read error raises."""
        stream = container.streams.video[0]
        read_started = time.monotonic()
        try:
            for packet in container.demux(stream):
                try:
                    frames = stream.decode(packet)
                except av.InvalidDataError as e:
                    self.stats.last_error = f"corrupt packet skipped: {e.strerror}"
                    continue
                for frame in frames:
                    yield frame.time, frame.to_ndarray(format="rgb24")
                if self._stop.is_set():
                    return
                read_started = time.monotonic()
        except av.FFmpegError as e:
            raise SourceError(f"lost {self.display_url}: {self._reason(e, read_started)}") from e

    def _decode(self) -> Iterator[tuple[float | None, np.ndarray]]:
        container, self._container = self._container, None
        connected_before = False
        failures = 0  # disconnects in a row without a frame in between
        while not self._stop.is_set():
            got_frame = False
            try:
                if container is None:
                    container = self._connect()
                if connected_before:
                    self.stats.reconnects += 1
                connected_before = True
                self._status("connected", self.display_url)
                for item in self._frames(container):
                    got_frame = True
                    yield item
                reason = "end of stream"
            except SourceError as e:
                if not self.live:
                    raise
                reason = str(e)
            finally:
                if container is not None:
                    container.close()
                    container = None
            if self._stop.is_set():
                return
            if not self.live:
                self._status("ended", self.display_url)
                return
            self.stats.last_error = reason
            self._status("disconnected", reason)
            failures = 1 if got_frame else failures + 1
            s = self.settings
            if s.max_reconnects is not None and failures > s.max_reconnects:
                raise SourceError(f"gave up on {self.display_url} after {s.max_reconnects} reconnection attempts: {reason}")
            delay = min(s.reconnect_initial * 2 ** (failures - 1), s.reconnect_max)
            self._status("reconnecting", f"{self.display_url} in {delay:g} s")
            if self._stop.wait(delay):
                return
