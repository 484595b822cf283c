"""Stored results in the viewer (`vos view RESULTS_DIR --frames FRAMES`): the same page, a frame slider instead of
a live picture, no prompts (they need a running engine).

Results are what `vos track --out`, `vos bench davis` and `vos batch` write: label maps `NNNNN.png` by
frame index and, if present, masks.jsonl (object scores for the captions).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from vos.streams.label_map import BACKGROUND_ID
from vos.streams.overlay import OverlayStyle, draw_overlay, encode_jpeg
from vos.streams.results import find_label_maps, open_frames, read_labels, read_scores
from vos.streams.sources.video_file import VideoFile
from vos.viewer import WebSettings


class ResultsView:
    """A results folder over its frames, drawn on request. Open with `async with`, which closes a video file."""

    stored = True

    def __init__(self, frames_source: str | Path, results_dir: str | Path, style: OverlayStyle = OverlayStyle(),
                 jpeg_quality: int = 90, name: str | None = None) -> None:  # fmt: skip
        self.source, self.results = Path(frames_source), Path(results_dir)
        self.maps = find_label_maps(self.results)
        self.scores = read_scores(self.results)
        self.frames, _ = open_frames(self.source)
        self.style = style
        self.jpeg_quality = jpeg_quality
        self.stream = name or self.results.resolve().name
        self._lock = threading.Lock()  # a video file decodes one frame at a time

    async def __aenter__(self) -> ResultsView:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if isinstance(self.frames, VideoFile):
            self.frames.close()

    def summary(self) -> dict:
        ids = sorted({i for frame in self.scores.values() for i in frame})
        return {
            "id": self.stream, "state": "stored", "stored": True, "frames": len(self.frames),
            "with_masks": sum(1 for i in self.maps if i < len(self.frames)),
            "objects": [{"id": i} for i in ids], "errors": [],
        }  # fmt: skip

    def _draw(self, index: int) -> bytes:
        """Blocking: frame `index` with its masks (none if it has no label map) as JPEG bytes."""
        with self._lock:
            image = self.frames[index]
        path = self.maps.get(index)
        labels = read_labels(path, index, image, self.source) if path else np.full(image.shape[:2], BACKGROUND_ID, np.uint8)
        overlay = draw_overlay(image, labels, self.scores.get(index), self.style, frame_index=index)
        return encode_jpeg(overlay, self.jpeg_quality)

    async def picture(self, index: int) -> bytes:
        """Frame `index`'s overlay (IndexError past the end, ValueError if it cannot be decoded)."""
        if not 0 <= index < len(self.frames):
            raise IndexError(f"frame {index} is outside 0..{len(self.frames) - 1}")
        return await asyncio.to_thread(self._draw, index)


async def serve_results(view: ResultsView, settings: WebSettings, stop: asyncio.Event | None = None) -> None:
    """Serves `view` until `stop` is set (default: SIGINT / SIGTERM)."""
    from vos.viewer.server import WebViewer

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with WebViewer(settings, view.style) as viewer, view:
        viewer.add_results(view)
        print(f"vos: viewing {view.results} over {view.source} on {viewer.url} (Ctrl-C ends)", file=sys.stderr)
        await stop.wait()
