"""What the everything mode's filters need of upscaled masks, without upscaling them.

Meta's generator upscales every mask that passes the predicted-IoU filter to the image's size (bilinear), then
counts its pixels above two thresholds (the stability score) and boxes its pixels above the mask threshold. Here
one numba pass per mask computes each upscaled logit in a row buffer and keeps only those counts and the box: no
(N, H, W) tensor is written, and the masks that survive NMS are upscaled for real afterwards.

The arithmetic is torch's CPU bilinear kernel (`align_corners=False`): source index `fma(scale, x + 0.5, -0.5)`,
rows first, then columns, each a fused multiply-add `fma(a, w0, b * w1)` rounded once (LLVM's `fma`, as torch's
vectorised kernel): the counts are those of torch's upscaled logits, bit for bit. `same_as_torch` checks that
once per process; where it fails (a torch build that rounds otherwise), `mask_stats` upscales with torch.

Shapes: N masks; low-res logits (N, h, w); the image (H, W).
"""

from __future__ import annotations

import logging
import threading
from functools import cache

import numpy as np
import torch
from numba import njit, prange, types
from numba.core.extending import intrinsic

from vos.segment.amg import masks_to_boxes, stability_score
from vos.tracking.transforms import upscale_logits

log = logging.getLogger(__name__)

_ONE_AT_A_TIME = threading.Lock()
"""Around the parallel kernel: numba's fallback threading layer (workqueue, where neither OpenMP nor TBB loads)
aborts on parallel calls from two threads at once, as streams discovering objects could make."""


def axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear source indices and weights of one axis, as torch computes them: (i0, i1, w0, w1), each (n_out,)."""
    if n_in == n_out:
        index = np.arange(n_out, dtype=np.int64)
        return index, index, np.ones(n_out, np.float32), np.zeros(n_out, np.float32)
    scale = np.float32(np.float32(n_in) / np.float32(n_out))
    dst = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    src = np.maximum((scale.astype(np.float64) * dst - 0.5).astype(np.float32), np.float32(0))  # exact: fma
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i0 + (i0 < n_in - 1), (np.float32(1) - w1).astype(np.float32), w1


@intrinsic
def _fma32(typingctx, a, b, c):  # pragma: no cover (numba)
    """a * b + c in float32, rounded once (LLVM's fma intrinsic: one instruction where the CPU has FMA)."""
    sig = types.float32(types.float32, types.float32, types.float32)
    return sig, lambda context, builder, signature, args: builder.fma(*args)


@njit(inline="always")
def _fma(a, w0, b, w1):  # pragma: no cover (numba)
    """fma(a, w0, b * w1) in float32: one bilinear step as torch's kernel makes it."""
    return _fma32(a, w0, np.float32(b * w1))


@njit(cache=True)
def _rows(low, x0, x1, wx0, wx1):  # pragma: no cover (numba)
    """(h, w) logits -> (h, W): each row upscaled."""
    out = np.empty((low.shape[0], x0.shape[0]), np.float32)
    for r in range(low.shape[0]):
        for x in range(x0.shape[0]):
            out[r, x] = _fma(low[r, x0[x]], wx0[x], low[r, x1[x]], wx1[x])
    return out


@njit(cache=True)
def _upscale(low, y0, y1, wy0, wy1, x0, x1, wx0, wx1):  # pragma: no cover (numba)
    """(h, w) logits -> (H, W) upscaled logits: the values `_stats` counts (checked against torch's)."""
    rows = _rows(low, x0, x1, wx0, wx1)
    out = np.empty((y0.shape[0], x0.shape[0]), np.float32)
    for y in range(y0.shape[0]):
        for x in range(x0.shape[0]):
            out[y, x] = _fma(rows[y0[y], x], wy0[y], rows[y1[y], x], wy1[y])
    return out


@njit(parallel=True, cache=True)
def _stats(low, y0, y1, wy0, wy1, x0, x1, wx0, wx1, thresholds, counts, boxes):  # pragma: no cover (numba)
    """Per mask: counts[n, k] of upscaled logits above thresholds[k + 1]; boxes[n] of those above thresholds[0]
    (x0, y0, x1, y1 inclusive; -1s for none). Loops are plain one-array passes so that LLVM vectorises them."""
    n = low.shape[0]
    height, width = y0.shape[0], x0.shape[0]
    for m in prange(n):
        rows = _rows(low[m], x0, x1, wx0, wx1)
        p = np.empty(width, np.float32)
        top, bottom, left, right = height, -1, width, -1
        for y in range(height):
            ra, rb, u, v = rows[y0[y]], rows[y1[y]], wy0[y], wy1[y]
            for x in range(width):
                p[x] = _fma(ra[x], u, rb[x], v)
            for k in range(thresholds.shape[0]):
                t = thresholds[k]
                above = 0
                for x in range(width):
                    above += p[x] > t
                if k:
                    counts[m, k - 1] += above
                elif above:
                    top = min(top, y)
                    bottom = y
                    first = 0
                    while p[first] <= t:
                        first += 1
                    last = width - 1
                    while p[last] <= t:
                        last -= 1
                    left, right = min(left, first), max(right, last)
        boxes[m, 0], boxes[m, 1], boxes[m, 2], boxes[m, 3] = left, top, right, bottom


@cache
def same_as_torch() -> bool:
    """Whether `_upscale` gives torch's bilinear upscaling bit for bit on this machine (logits of three magnitudes) (a torch build whose kernel
    rounds otherwise makes `mask_stats` upscale with torch)."""
    gen = torch.Generator().manual_seed(0)
    cases = (((128, 128), (480, 854), 0.1), ((64, 64), (1080, 1920), 8.0), ((32, 48), (77, 101), 100.0))
    for (h, w), (height, width), scale in cases:
        low = torch.randn(h, w, generator=gen) * scale
        want = upscale_logits(low[None, None], (height, width))[0, 0]
        got = _upscale(low.numpy(), *axis_weights(h, height), *axis_weights(w, width))
        if not np.array_equal(got, want.numpy()):
            log.info("torch's bilinear kernel rounds otherwise here: the everything mode upscales every mask")
            return False
    return True


def mask_stats(
    low_res: torch.Tensor, hw: tuple[int, int], threshold: float, offset: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, h, w) low-res logits -> the stability scores (N,) and boxes (N, 4) (XYXY, inclusive; zeros for an empty
    mask) that `stability_score` and `masks_to_boxes` give on `upscale_logits(low_res, hw)`, bit for bit."""
    if not same_as_torch():
        return upscaled_stats(upscale_logits(low_res[:, None], hw)[:, 0], threshold, offset)
    low = np.ascontiguousarray(low_res.detach().float().cpu().numpy())
    n = low.shape[0]
    counts = np.zeros((n, 2), np.int64)
    boxes = np.zeros((n, 4), np.int64)
    if n:
        thresholds = np.array([threshold, threshold + offset, threshold - offset], np.float32)
        with _ONE_AT_A_TIME:
            _stats(low, *axis_weights(low.shape[1], hw[0]), *axis_weights(low.shape[2], hw[1]), thresholds,
                   counts, boxes)  # fmt: skip
    counts, boxes = torch.from_numpy(counts), torch.from_numpy(boxes)
    return counts[:, 0] / counts[:, 1], boxes.masked_fill((boxes[:, 3] < 0)[:, None], 0)


def upscaled_stats(masks: torch.Tensor, threshold: float, offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) upscaled logits -> their stability scores (N,) and boxes (N, 4): what `mask_stats` counts."""
    return stability_score(masks, threshold, offset), masks_to_boxes(masks > threshold)
