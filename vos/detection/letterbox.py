"""Letterbox pre-processing: a frame scaled to fit the detector's input, aspect kept, padded grey around it.

The same arithmetic as Ultralytics' `LetterBox` (centred, padding value 114, linear resize, each side rounded) and
its `scale_boxes`, so boxes come back to the frame where Ultralytics puts them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How an (H, W) frame sits in an (h, w) input: scaled to (new_h, new_w), then padded."""

    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]
    new_hw: tuple[int, int]
    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def fit(cls, frame_hw: tuple[int, int], input_hw: tuple[int, int]) -> Letterbox:
        (h0, w0), (h1, w1) = frame_hw, input_hw
        r = min(h1 / h0, w1 / w0)
        new_h, new_w = max(round(h0 * r), 1), max(round(w0 * r), 1)
        dh, dw = (h1 - new_h) / 2, (w1 - new_w) / 2
        return cls(
            frame_hw, input_hw, (new_h, new_w),
            round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1),
        )  # fmt: skip

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8."""
        new_h, new_w = self.new_hw
        if (frame.shape[0], frame.shape[1]) != (new_h, new_w):
            frame = cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        return cv2.copyMakeBorder(
            frame, self.top, self.bottom, self.left, self.right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
        )

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x0, y0, x1, y1 on the input -> on the frame, clipped to it."""
        (h0, w0), (h1, w1) = self.frame_hw, self.input_hw
        new_h, new_w = self.new_hw
        pad_x, pad_y = round((w1 - new_w) / 2 - 0.1), round((h1 - new_h) / 2 - 0.1)
        out = boxes.astype(np.float32, copy=True)
        out[:, [0, 2]] = ((out[:, [0, 2]] - pad_x) / (new_w / w0)).clip(0, w0)
        out[:, [1, 3]] = ((out[:, [1, 3]] - pad_y) / (new_h / h0)).clip(0, h0)
        return out
