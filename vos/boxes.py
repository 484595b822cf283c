"""Boxes (N, 4) as x0, y0, x1, y1 (XYXY) in NumPy: IoU and greedy non-maximum suppression, shared by the
detector's post-processing and the everything mode."""

from __future__ import annotations

import numpy as np


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with each of boxes (N, 4); 0 where the union is empty."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = (x1 - x0).clip(0) * (y1 - y0).clip(0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int | None = None) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, best first (ties: the lower index first): a box is dropped when its
    IoU with a kept one is above `iou` (torchvision's rule). Each kept box meets only the boxes still in the race,
    so the cost is (boxes x kept), not boxes squared. `limit`: stop once that many are kept (the same first ones:
    each is kept or dropped by the better ones alone)."""
    order = np.argsort(-scores, kind="stable")
    kept = []
    while order.size and (limit is None or len(kept) < limit):
        i = order[0]
        kept.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i], boxes[rest]) <= iou]
    return np.asarray(kept, dtype=np.int64)
