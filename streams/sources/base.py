"""Frame sources for the engine: blocking decoders run in a thread, frames arrive on the event loop.

A source is an async iterator of `Frame`s. Its decoder (PyAV, PIL) runs in a thread of
its own so decoding overlaps inference and never blocks the event loop. Between the
two sits a small buffer whose policy depends on the source:

- finite sources (files, folders): the decoder waits for room; no frame is ever lost.
- live sources (cameras, RTSP): the decoder never waits; when the consumer is slower
  than the camera the oldest buffered frame is dropped (the newest is kept) and
  counted in `stats.dropped`, so latency stays bounded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

StatusCallback = Callable[[str, str], None]
"""Called from the decoder thread with (state, detail): "connected", "disconnected", "reconnecting", "ended"."""


def _ignore_status(state: str, detail: str) -> None:
    pass


@dataclass(frozen=True)
class Frame:
    index: int  # position in the stream (0, 1, ...); on a live source, gaps are dropped frames
    pts: float | None  # presentation time, seconds
    image: np.ndarray  # HxWx3 uint8 RGB
    decoded_at: float = field(default_factory=time.monotonic)  # time.monotonic() when decoded
    decode_seconds: float = 0.0  # the decoder thread's time getting it (reading + decoding; a camera's wait included)


@dataclass(frozen=True)
class Skipped:
    """Yielded by `_decode` in place of a frame that cannot be decoded: its index is skipped, counted."""

    reason: str


@dataclass
class SourceStats:
    decoded: int = 0
    dropped: int = 0  # live sources only: stale frames replaced by newer ones
    skipped: int = 0  # frames that could not be decoded (corrupt file or packet)
    reconnects: int = 0
    last_error: str | None = None


class SourceError(Exception):
    """The source cannot be read at all (missing file, not a video, unreachable camera)."""


class FrameSource(ABC):
    """Base of every source: subclasses implement `_decode`, a blocking generator of (pts, image).

    `async with source:` opens it (SourceError if it cannot be read) and closes it on exit.
    """

    live: bool = False
    buffer_size: int = 4  # frames between decoder and consumer (live sources: 1, the newest)

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = SourceStats()
        self._on_status: StatusCallback = _ignore_status
        self._stop = threading.Event()

    def __len__(self) -> int:
        """Number of frames of a finite source (TypeError for live and unbounded ones)."""
        raise TypeError(f"{self.name} has no known length")

    @property
    def length(self) -> int | None:
        try:
            return len(self)
        except TypeError:
            return None

    def open(self) -> None:
        """Checks the source can be read; raises SourceError with a readable reason if not. Blocking."""

    def close(self) -> None:
        """Releases what `open()` holds. Blocking."""

    async def __aenter__(self) -> FrameSource:
        await asyncio.to_thread(self.open)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
        await asyncio.to_thread(self.close)

    @abstractmethod
    def _decode(self) -> Iterator[tuple[float | None, np.ndarray] | Skipped]:
        """Blocking: yields (pts seconds, HxWx3 uint8 RGB), or `Skipped` for a frame that cannot be decoded,
        until the source ends or `self._stop` is set."""

    def _status(self, state: str, detail: str = "") -> None:
        self._on_status(state, detail)

    async def frames(self, on_status: StatusCallback | None = None) -> AsyncIterator[Frame]:
        """Decodes in a thread and yields frames in order; raises the decoder's error, if any, at its place.

        `on_status` hears the connection events, from the decoder thread, while this runs.
        """
        loop = asyncio.get_running_loop()
        buffer: deque[Frame | BaseException | None] = deque()
        ready = asyncio.Event()
        room = threading.Semaphore(self.buffer_size)

        def push(item: Frame | BaseException | None) -> None:  # on the loop
            if self.live and isinstance(item, Frame):
                while len(buffer) >= self.buffer_size and isinstance(buffer[0], Frame):
                    buffer.popleft()
                    self.stats.dropped += 1
            buffer.append(item)
            ready.set()

        def decode() -> None:  # in the decoder thread, until the source ends or `stop()`
            started = time.perf_counter()
            for index, item in enumerate(self._decode()):
                seconds = time.perf_counter() - started
                if self._stop.is_set():
                    return
                if isinstance(item, Skipped):
                    self.stats.skipped += 1
                    self.stats.last_error = item.reason
                    continue
                pts, image = item
                if not self.live:
                    while not room.acquire(timeout=0.1):
                        if self._stop.is_set():
                            return
                self.stats.decoded += 1
                loop.call_soon_threadsafe(push, Frame(index, pts, image, decode_seconds=seconds))
                started = time.perf_counter()

        def run() -> None:  # the decoder thread
            item: BaseException | None = None
            try:
                decode()
            except BaseException as e:  # handed to the consumer, raised there
                item = e
            try:  # the end, also after `stop()`: a consumer waiting for a frame must wake up
                loop.call_soon_threadsafe(push, None if self._stop.is_set() else item)
            except RuntimeError:  # the loop is closed
                pass

        self._stop.clear()
        self._on_status = on_status or _ignore_status
        thread = threading.Thread(target=run, name=f"decode-{self.name}", daemon=True)
        thread.start()
        try:
            while True:
                while not buffer:
                    ready.clear()
                    await ready.wait()
                item = buffer.popleft()
                if isinstance(item, Frame):
                    if not self.live:
                        room.release()
                    yield item
                elif item is None:
                    return
                else:
                    raise item
        finally:
            self._stop.set()
            await asyncio.to_thread(thread.join, 10.0)
            self._on_status = _ignore_status

    def stop(self) -> None:
        """Ends `frames()` after the frame being decoded (thread-safe)."""
        self._stop.set()
