"""Detector outputs -> boxes, scores and classes on the detector's input, for the layouts YOLO exports write.

- `raw`: Ultralytics' YOLOv8 / YOLO11 detect head, (1, 4 + C [+ extra], A): per anchor a box as centre and size,
  then C class scores (segmentation heads add mask coefficients after them); no NMS inside, so the best class per
  anchor above the confidence, then class-aware NMS, as Ultralytics' `non_max_suppression` does.
- `end2end`: heads with NMS (or NMS-free one-to-one matching) inside, (1, N, 6): x0, y0, x1, y1, score, class.

N detections; boxes (N, 4) float32 x0, y0, x1, y1; scores (N,) float32; classes (N,) int64.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from vos.boxes import nms

Layout = Literal["raw", "end2end"]
MAX_WH = 7680
"""Class offset of Ultralytics' class-aware NMS: boxes of different classes never overlap."""
MAX_NMS = 30000
"""Boxes into NMS at most, the most confident."""


def identify(shape: tuple, classes: int | None) -> Layout | None:
    """The layout of an output of `shape` (ints, or None for a variable axis), or None when it is none of them.
    `classes`: how many the file names, when it names them."""
    if len(shape) != 3 or shape[0] not in (1, None):
        return None
    _, rows, cols = shape
    if cols == 6 and rows is not None and rows != 6:
        return "end2end"
    if rows is None or rows < 5 or (cols is not None and cols <= rows):
        return None
    return "raw" if classes is None or rows >= 4 + classes else None


def decode(
    output: np.ndarray, layout: Layout, classes: int, conf: float, iou: float, keep: np.ndarray | None,
    max_det: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """One image's detections from its (1, ...) output; `keep`: the class ids wanted (None: all)."""
    if layout == "end2end":
        return _end2end(output[0], conf, keep, max_det)
    return _raw(output[0], classes, conf, iou, keep, max_det)


def _end2end(rows: np.ndarray, conf: float, keep: np.ndarray | None, max_det: int):
    rows = rows.astype(np.float32)
    chosen = rows[:, 4] > conf
    if keep is not None:
        chosen &= np.isin(rows[:, 5], keep)
    rows = rows[chosen][:max_det]
    return rows[:, :4].copy(), rows[:, 4].copy(), rows[:, 5].astype(np.int64)


def _raw(head: np.ndarray, classes: int, conf: float, iou: float, keep: np.ndarray | None, max_det: int):
    scores_all = head[4 : 4 + classes].astype(np.float32)
    best = scores_all.argmax(0)
    scores = scores_all[best, np.arange(scores_all.shape[1])]
    chosen = scores > conf
    if keep is not None:
        chosen &= np.isin(best, keep)
    centre_size = head[:4, chosen].T.astype(np.float32)
    scores, best = scores[chosen], best[chosen]
    order = np.argsort(-scores, kind="stable")[:MAX_NMS]
    boxes = xywh_to_xyxy(centre_size[order])
    scores, best = scores[order], best[order]
    kept = nms(boxes + (best * MAX_WH)[:, None].astype(np.float32), scores, iou, limit=max_det)
    return boxes[kept], scores[kept], best[kept].astype(np.int64)


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    out = np.empty_like(boxes)
    half = boxes[:, 2:4] / 2
    out[:, :2] = boxes[:, :2] - half
    out[:, 2:] = boxes[:, :2] + half
    return out
