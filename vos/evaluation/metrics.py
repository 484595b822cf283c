"""Per-frame region similarity J and boundary accuracy F, bit-for-bit as the DAVIS toolkit computes them.

Masks are label maps: (H, W) uint8 arrays whose pixel values are mapped to object ids 1..K by a
lookup table (LUT, (256,) uint8; 0 = background), so one pass over a frame scores every object.

- J: |G ∩ P| / |G ∪ P|, and 1 when both masks are empty.
- F: boundary maps as the toolkit's `seg2bmap` (a pixel is on the boundary where its membership differs
  from its right, lower or lower-right neighbour; the last row only looks right, the last column only
  down); a boundary pixel of one map is matched when the other map has a boundary pixel within the disk
  of radius `ceil(BOUNDARY_TOLERANCE * image diagonal)` (the toolkit dilates with that disk), and
  F = 2PR / (P + R), with F = 1 when neither map has a boundary and F = 0 when only one has.

The numba kernel never dilates a frame: one pass counts areas, intersections and bounding boxes;
boundaries are then traced inside each object's box and kept as per-row lists of columns, and a
boundary pixel is matched by looking, on each row of the disk, for a column of the other map within
the disk's half width there. It releases the GIL, so `score_pairs` decodes PNGs and scores frames on
a thread pool.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from numba import njit
from PIL import Image

from vos.evaluation import EvaluationError

BOUNDARY_TOLERANCE = 0.008
"""Boundary match tolerance as a fraction of the image diagonal (DAVIS `bound_th`)."""

N_VALUES = 256
"""Pixel values a label map can hold (uint8)."""

_SINGLE_CHANNEL_MODES = ("P", "L", "1", "I", "I;16")
_LISTED = 5
_CHUNK = 64
"""Pixels per row chunk: all-background chunks are skipped after one vectorised OR."""


@dataclass(frozen=True)
class FrameScores:
    """Scores of one frame for objects 1..K, and what the two label maps held.

    j, f: (K,) float64. gt_area, pred_area: (K,) int64 pixel counts after the LUTs.
    gt_values, pred_values: (256,) bool, which raw pixel values occur (to check ids and formats).
    """

    j: np.ndarray
    f: np.ndarray
    gt_area: np.ndarray
    pred_area: np.ndarray
    gt_values: np.ndarray
    pred_values: np.ndarray


@dataclass(frozen=True)
class FramePair:
    """One annotated frame to score: ground-truth and predicted PNG, and how to read their values."""

    gt: Path
    pred: Path
    n_objects: int
    gt_lut: np.ndarray
    pred_lut: np.ndarray


def boundary_radius(height: int, width: int, tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """Disk radius in pixels for boundary matching; a tolerance >= 1 is already in pixels (as in DAVIS)."""
    if tolerance >= 1:
        return int(tolerance)
    return int(math.ceil(tolerance * math.sqrt(height * height + width * width)))


@lru_cache(maxsize=None)
def _half_widths(radius: int) -> np.ndarray:
    widths = np.array([math.isqrt(radius * radius - d * d) for d in range(radius + 1)], dtype=np.int64)
    widths.flags.writeable = False
    return widths


def disk_half_widths(radius: int) -> np.ndarray:
    """(radius + 1,) int64: half width of the disk {dx² + dy² <= radius²} at row offset |dy| (skimage `disk`)."""
    return _half_widths(int(radius))


def ids_lut(n_objects: int) -> np.ndarray:
    """LUT keeping values 1..n_objects as object ids; any other value is background."""
    lut = np.zeros(N_VALUES, dtype=np.uint8)
    lut[1 : n_objects + 1] = np.arange(1, n_objects + 1)
    return lut


def binary_lut(foreground: Sequence[int] | range = range(1, N_VALUES)) -> np.ndarray:
    """LUT mapping the given values to object 1 (default: any non-zero value)."""
    lut = np.zeros(N_VALUES, dtype=np.uint8)
    lut[np.asarray(list(foreground), dtype=np.int64)] = 1
    return lut


@njit(nogil=True, cache=True)
def _membership(labels, lut, k, y, x0, x1, out):  # pragma: no cover - compiled
    """out[i] = 1 where pixel (y, x0 + i) belongs to object k, for x0 + i <= x1 and one column beyond.

    Past the last image column the value repeats, so that column compares only downwards (seg2bmap).
    """
    w = labels.shape[1]
    x_end = min(x1 + 1, w - 1)
    for x in range(x0, x_end + 1):
        out[x - x0] = 1 if lut[labels[y, x]] == k else 0
    if x1 == w - 1:
        out[x1 + 1 - x0] = out[x1 - x0]


@njit(nogil=True, cache=True)
def _boundary_rows(labels, lut, k, y0, y1, x0, x1):  # pragma: no cover - compiled
    """Object k's boundary pixels within rows y0..y1, columns x0..x1, by row.

    Returns (row_start (rows + 1,), xs (n,)): row ry holds columns xs[row_start[ry]:row_start[ry + 1]]
    (relative to x0, increasing).
    """
    h = labels.shape[0]
    rows, cols = y1 - y0 + 1, x1 - x0 + 1
    row_start = np.zeros(rows + 1, dtype=np.int64)
    xs = np.empty(rows * cols, dtype=np.int32)
    cur = np.empty(cols + 1, dtype=np.uint8)
    below = np.empty(cols + 1, dtype=np.uint8)
    _membership(labels, lut, k, y0, x0, x1, cur)
    n = 0
    for y in range(y0, y1 + 1):
        if y < h - 1:
            _membership(labels, lut, k, y + 1, x0, x1, below)
        else:
            below[:] = cur  # the last image row compares only rightwards (seg2bmap)
        for i in range(cols):
            c = cur[i]
            if (c ^ cur[i + 1]) | (c ^ below[i]) | (c ^ below[i + 1]):
                xs[n] = i
                n += 1
        row_start[y - y0 + 1] = n
        cur, below = below, cur
    return row_start, xs[:n]


@njit(nogil=True, cache=True)
def _any_between(xs, start, stop, lo, hi):  # pragma: no cover - compiled
    """Whether increasing xs[start:stop] holds a value in lo..hi (binary search)."""
    end = stop
    while start < stop:
        mid = (start + stop) // 2
        if xs[mid] < lo:
            start = mid + 1
        else:
            stop = mid
    return start < end and xs[start] <= hi


@njit(nogil=True, cache=True)
def _count_matched(src_start, src_xs, dst_start, dst_xs, half_widths):  # pragma: no cover - compiled
    """How many boundary pixels of `src` have a boundary pixel of `dst` within the disk."""
    rows = src_start.shape[0] - 1
    radius = half_widths.shape[0] - 1
    matched = 0
    for ry in range(rows):
        for idx in range(src_start[ry], src_start[ry + 1]):
            x = src_xs[idx]
            for d in range(radius + 1):
                w = half_widths[d]
                yy = ry - d
                if yy >= 0 and _any_between(dst_xs, dst_start[yy], dst_start[yy + 1], x - w, x + w):
                    matched += 1
                    break
                yy = ry + d
                if d > 0 and yy < rows and _any_between(dst_xs, dst_start[yy], dst_start[yy + 1], x - w, x + w):
                    matched += 1
                    break
    return matched


@njit(nogil=True, cache=True)
def _boundary_f(gt, gt_lut, pred, pred_lut, k, y0, y1, x0, x1, half_widths):  # pragma: no cover - compiled
    if y1 < 0:
        return 1.0
    # Pixels just above or left of the object differ from their lower/right neighbour: on the boundary.
    y0 = max(y0 - 1, 0)
    x0 = max(x0 - 1, 0)
    g_start, g_xs = _boundary_rows(gt, gt_lut, k, y0, y1, x0, x1)
    p_start, p_xs = _boundary_rows(pred, pred_lut, k, y0, y1, x0, x1)
    n_gt = g_xs.shape[0]
    n_pred = p_xs.shape[0]
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    precision = _count_matched(p_start, p_xs, g_start, g_xs, half_widths) / n_pred
    recall = _count_matched(g_start, g_xs, p_start, p_xs, half_widths) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


@njit(nogil=True, cache=True)
def _tally_run(gv, pv, y, xs, xe, gt_lut, pred_lut, inter, area, box, gt_seen, pred_seen):  # pragma: no cover
    """Count a run of pixels xs..xe of row y that all hold gt value gv and pred value pv."""
    gt_seen[gv] = True
    pred_seen[pv] = True
    g = gt_lut[gv]
    p = pred_lut[pv]
    for side, k in ((0, g), (1, p)):
        if k != 0:
            area[side, k] += xe - xs + 1
            box[0, k] = min(box[0, k], y)
            box[1, k] = y
            box[2, k] = min(box[2, k], xs)
            box[3, k] = max(box[3, k], xe)
    if g != 0 and g == p:
        inter[g] += xe - xs + 1


@njit(nogil=True, cache=True)
def _tally_frame(gt, gt_lut, pred, pred_lut, n_objects, gt_seen, pred_seen):  # pragma: no cover - compiled
    """Areas, intersections and bounding boxes of objects 0..K in one pass over the frame.

    Returns inter (K + 1,), area (2, K + 1) (gt, pred) and box (4, K + 1) rows y0, y1, x0, x1
    (y1 = -1: absent from both maps). Row chunks of background only are skipped after a vectorised
    OR; elsewhere runs of equal (gt, pred) values are counted at once.
    """
    h, w = gt.shape
    n = n_objects + 1
    inter = np.zeros(n, dtype=np.int64)
    area = np.zeros((2, n), dtype=np.int64)
    box = np.empty((4, n), dtype=np.int64)
    box[0, :] = h
    box[1, :] = -1
    box[2, :] = w
    box[3, :] = -1
    full_chunks = w // _CHUNK
    for y in range(h):
        gt_row = gt[y]
        pred_row = pred[y]
        for chunk in range(full_chunks + 1):
            c0 = chunk * _CHUNK
            c1 = min(c0 + _CHUNK, w)
            if c0 >= c1:
                continue
            any_label = 0
            if chunk < full_chunks:
                for i in range(_CHUNK):  # a constant trip count, so LLVM vectorises it
                    any_label |= gt_row[c0 + i] | pred_row[c0 + i]
            else:
                for x in range(c0, c1):
                    any_label |= gt_row[x] | pred_row[x]
            if any_label == 0:
                gt_seen[0] = True
                pred_seen[0] = True
                continue
            start = c0
            gv = gt_row[c0]
            pv = pred_row[c0]
            for x in range(c0 + 1, c1):
                if gt_row[x] != gv or pred_row[x] != pv:
                    _tally_run(gv, pv, y, start, x - 1, gt_lut, pred_lut, inter, area, box, gt_seen, pred_seen)
                    start = x
                    gv = gt_row[x]
                    pv = pred_row[x]
            _tally_run(gv, pv, y, start, c1 - 1, gt_lut, pred_lut, inter, area, box, gt_seen, pred_seen)
    return inter, area, box


@njit(nogil=True, cache=True)
def _score_frame(
    gt, gt_lut, pred, pred_lut, n_objects, half_widths, j_out, f_out, gt_area, pred_area, gt_seen, pred_seen
):  # pragma: no cover - compiled
    inter, area, box = _tally_frame(gt, gt_lut, pred, pred_lut, n_objects, gt_seen, pred_seen)
    for k in range(1, n_objects + 1):
        union = area[0, k] + area[1, k] - inter[k]
        j_out[k - 1] = 1.0 if union == 0 else inter[k] / union
        y0, y1, x0, x1 = box[0, k], box[1, k], box[2, k], box[3, k]
        f_out[k - 1] = _boundary_f(gt, gt_lut, pred, pred_lut, k, y0, y1, x0, x1, half_widths)
        gt_area[k - 1] = area[0, k]
        pred_area[k - 1] = area[1, k]


def _as_labels(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a (H, W) label map, got shape {mask.shape}")
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8)  # not a view: Pillow's 1-bit arrays store True as 255
    elif mask.dtype != np.uint8:
        if mask.size and (mask.min() < 0 or mask.max() >= N_VALUES):
            raise ValueError(f"{name} holds values outside 0..{N_VALUES - 1}")
        mask = mask.astype(np.uint8)
    return np.ascontiguousarray(mask)


def _as_lut(lut: np.ndarray | None, n_objects: int) -> np.ndarray:
    if lut is None:
        return ids_lut(n_objects)
    lut = np.ascontiguousarray(lut, dtype=np.uint8)
    if lut.shape != (N_VALUES,) or lut.max() > n_objects:
        raise ValueError(f"a LUT must be ({N_VALUES},) with values in 0..{n_objects}")
    return lut


def score_frame(
    gt: np.ndarray,
    pred: np.ndarray,
    n_objects: int,
    *,
    gt_lut: np.ndarray | None = None,
    pred_lut: np.ndarray | None = None,
    radius: int | None = None,
) -> FrameScores:
    """J and F of objects 1..n_objects in one frame.

    gt, pred: (H, W) label maps (uint8 or bool). The LUTs ((256,) uint8) map raw values to object ids
    (default: values 1..n_objects are ids). radius: boundary tolerance in pixels (default from the size).
    """
    if n_objects < 1:
        raise ValueError("n_objects must be at least 1")
    gt = _as_labels(gt, "gt")
    pred = _as_labels(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} differ in size")
    radius = boundary_radius(*gt.shape) if radius is None else int(radius)
    j = np.empty(n_objects)
    f = np.empty(n_objects)
    gt_area = np.empty(n_objects, dtype=np.int64)
    pred_area = np.empty(n_objects, dtype=np.int64)
    gt_values = np.zeros(N_VALUES, dtype=np.bool_)
    pred_values = np.zeros(N_VALUES, dtype=np.bool_)
    _score_frame(
        gt,
        _as_lut(gt_lut, n_objects),
        pred,
        _as_lut(pred_lut, n_objects),
        n_objects,
        disk_half_widths(radius),
        j,
        f,
        gt_area,
        pred_area,
        gt_values,
        pred_values,
    )
    return FrameScores(j, f, gt_area, pred_area, gt_values, pred_values)


def jaccard(gt: np.ndarray, pred: np.ndarray) -> float:
    """Region similarity J of two binary (H, W) masks (non-zero = object)."""
    return float(score_frame(gt, pred, 1, gt_lut=binary_lut(), pred_lut=binary_lut()).j[0])


def boundary_f(gt: np.ndarray, pred: np.ndarray, radius: int | None = None) -> float:
    """Boundary accuracy F of two binary (H, W) masks (non-zero = object)."""
    return float(score_frame(gt, pred, 1, gt_lut=binary_lut(), pred_lut=binary_lut(), radius=radius).f[0])


def read_mask(path: Path) -> np.ndarray:
    """A single-channel PNG (palette, greyscale or 1-bit) as a (H, W) uint8 label map."""
    try:
        with Image.open(path) as image:
            if image.mode not in _SINGLE_CHANNEL_MODES:
                raise EvaluationError(
                    f"{path}: expected a single-channel PNG (palette or greyscale object ids), got mode {image.mode}"
                )
            mask = np.asarray(image)
    except FileNotFoundError:
        raise EvaluationError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise EvaluationError(f"{path}: cannot read the PNG ({e})") from None
    try:
        return _as_labels(mask, str(path))
    except ValueError as e:
        raise EvaluationError(str(e)) from None


def png_stems(folder: Path) -> list[str]:
    """Sorted names (without .png) of the PNGs in a folder: the frames of a sequence or object."""
    return sorted(p.stem for p in Path(folder).glob("*.png"))


def short_list(names: Iterable[str]) -> str:
    """The first few names, comma-separated, for error messages."""
    names = list(names)
    shown = ", ".join(names[:_LISTED])
    return shown + (f" and {len(names) - _LISTED} more" if len(names) > _LISTED else "")


def _score_pair(pair: FramePair) -> FrameScores:
    gt = read_mask(pair.gt)
    pred = read_mask(pair.pred)
    if gt.shape != pred.shape:
        raise EvaluationError(
            f"{pair.pred} is {pred.shape[1]}x{pred.shape[0]} but its annotation {pair.gt} is "
            f"{gt.shape[1]}x{gt.shape[0]} (width x height); write results at the annotation size"
        )
    return score_frame(gt, pred, pair.n_objects, gt_lut=pair.gt_lut, pred_lut=pair.pred_lut)


def default_threads() -> int:
    """Threads to use: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def score_pairs(pairs: Sequence[FramePair], *, threads: int | None = None) -> Iterator[FrameScores]:
    """Decode and score frame pairs on `threads` threads; yields in the order of `pairs`."""
    threads = default_threads() if threads is None else max(1, threads)
    if threads == 1 or len(pairs) <= 1:
        yield from map(_score_pair, pairs)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vos-eval") as pool:
        futures = [pool.submit(_score_pair, pair) for pair in pairs]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()
