"""Where a stream's masks go: anything with an async `write` (folders, MQTT; later overlays, viewers)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from vos.streams.messages import MaskMessage
from vos.streams.sources.base import Frame


@runtime_checkable
class Sink(Protocol):
    """Receives every processed frame of one stream, in order, on the event loop.

    `labels` is the frame's (H, W) label map (pixel value = object id); `message` the same masks as
    COCO RLE with scores and boxes. `write` must not block the loop (run blocking work in a thread).
    Sinks are opened and closed by whoever made them (`async with`); the engine only writes.
    """

    async def write(self, frame: Frame, message: MaskMessage, labels: np.ndarray) -> None: ...
