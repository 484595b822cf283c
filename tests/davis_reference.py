"""The DAVIS toolkit's per-frame J and F written out straightforwardly with whole-array numpy.

The test oracle (tests/test_eval_metrics.py compares our numba evaluator against it) and the
baseline that benchmarks/bench_eval.py times. It follows davis2017-evaluation step by step:
J is intersection over union (1 when both masks are empty), F matches the `seg2bmap` boundaries of
the two masks within a disk of radius ceil(0.008 * image diagonal).

The dilation by that disk comes in two exact numpy versions: `dilate_disk` ORs the mask shifted by
every offset in the disk (slow, obviously right: the oracle's default), and `dilate_rows` treats the
disk as a union of row segments (one cumulative-sum pass per distinct segment width, then shifted
ORs: the benchmark's). `f_measure` takes either, or any other `Dilate` (the benchmark's cv2.dilate).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

BOUND_TH = 0.008

Dilate = Callable[[np.ndarray, int], np.ndarray]


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Boundary map: where a pixel differs from its east, south or south-east neighbour (the toolkit's)."""
    seg = seg.astype(bool)
    e, s, se = np.zeros_like(seg), np.zeros_like(seg), np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def dilate_disk(b: np.ndarray, radius: int) -> np.ndarray:
    """Dilation by the disk {dx² + dy² <= radius²}: an OR of the mask shifted by each of its offsets."""
    h, w = b.shape
    padded = np.zeros((h + 2 * radius, w + 2 * radius), dtype=bool)
    padded[radius : radius + h, radius : radius + w] = b
    out = np.zeros_like(b)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dx * dx + dy * dy <= radius * radius:
                out |= padded[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
    return out


def _disk_offsets(radius: int) -> list[tuple[int, int]]:
    """(dy, half width) of each row of the disk {dx² + dy² <= radius²}."""
    return [(dy, math.isqrt(radius * radius - dy * dy)) for dy in range(-radius, radius + 1)]


def dilate_rows(b: np.ndarray, radius: int) -> np.ndarray:
    """The same dilation, the disk taken as row segments: one prefix-sum pass per width, then shifted ORs."""
    h, w = b.shape
    prefix = np.zeros((h, w + 1), dtype=np.int32)
    np.cumsum(b, axis=1, out=prefix[:, 1:])
    cols = np.arange(w)
    rows_by_width: dict[int, np.ndarray] = {}
    out = np.zeros((h, w), dtype=bool)
    for dy, half in _disk_offsets(radius):
        if half not in rows_by_width:
            lo, hi = np.clip(cols - half, 0, w), np.clip(cols + half + 1, 0, w)
            rows_by_width[half] = (prefix[:, hi] - prefix[:, lo]) > 0
        seg = rows_by_width[half]
        if dy >= 0:
            out[: h - dy] |= seg[dy:]
        else:
            out[-dy:] |= seg[: h + dy]
    return out


def f_measure(fg: np.ndarray, gt: np.ndarray, dilate: Dilate = dilate_disk) -> float:
    """Boundary F of the (H, W) prediction `fg` against the ground truth `gt` (the toolkit's argument order)."""
    radius = int(np.ceil(BOUND_TH * np.linalg.norm(fg.shape)))
    fg_b, gt_b = seg2bmap(fg), seg2bmap(gt)
    n_fg, n_gt = np.sum(fg_b), np.sum(gt_b)
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = np.sum(fg_b & dilate(gt_b, radius)) / float(n_fg)
        recall = np.sum(gt_b & dilate(fg_b, radius)) / float(n_gt)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def iou(gt: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """J over the last two axes: a scalar for (H, W) masks, (T,) for (T, H, W); 1 where both are empty."""
    inter = np.sum(gt & fg, axis=(-2, -1))
    union = np.sum(gt | fg, axis=(-2, -1))
    return np.where(union == 0, 1.0, inter / np.where(union == 0, 1, union))[()]
