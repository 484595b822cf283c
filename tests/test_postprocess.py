"""Hole filling and non-overlapping masks: known answers, a plain flood-fill reference, and Meta's code."""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from vos.tracking.postprocess import HOLE_FILL_LOGIT, fill_holes, non_overlapping


def flood_fill_holes(logits: np.ndarray, max_area: int) -> np.ndarray:
    """Straightforward reference: BFS over 8-connected background components of one (H, W) map."""
    background = logits <= 0
    seen = np.zeros_like(background)
    out = logits.copy()
    h, w = background.shape
    for y0 in range(h):
        for x0 in range(w):
            if not background[y0, x0] or seen[y0, x0]:
                continue
            component, queue = [], deque([(y0, x0)])
            seen[y0, x0] = True
            while queue:
                y, x = queue.popleft()
                component.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < h and 0 <= nx < w and background[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            queue.append((ny, nx))
            if len(component) <= max_area:
                for y, x in component:
                    out[y, x] = HOLE_FILL_LOGIT
    return out


def test_small_holes_are_filled_large_ones_kept():
    logits = torch.full((1, 1, 20, 20), 5.0)
    logits[0, 0, 2:4, 2:4] = -3.0  # 4 pixels: a hole
    logits[0, 0, 10:13, 10:13] = -3.0  # 9 pixels: kept with max_area 8
    logits[0, 0, 0, 19] = -1.0  # a corner pixel counts too
    out = fill_holes(logits, 8)
    assert (out[0, 0, 2:4, 2:4] == HOLE_FILL_LOGIT).all() and out[0, 0, 0, 19] == HOLE_FILL_LOGIT
    assert (out[0, 0, 10:13, 10:13] == -3.0).all()
    assert torch.equal(fill_holes(logits, 0), logits)


def test_diagonal_neighbours_join_a_hole():
    logits = torch.full((1, 1, 10, 10), 1.0)
    for i in range(5):  # a diagonal line of 5 background pixels: one 8-connected component
        logits[0, 0, i + 2, i + 2] = -1.0
    assert (fill_holes(logits, 4) <= 0).sum() == 5  # 5 > 4: not a hole
    assert (fill_holes(logits, 5) <= 0).sum() == 0


def test_equals_flood_fill_on_random_masks():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(0.3, 1.0, (3, 1, 48, 40)).astype(np.float32))
    out = fill_holes(logits, 8)
    for i in range(3):
        assert np.array_equal(out[i, 0].numpy(), flood_fill_holes(logits[i, 0].numpy(), 8))
    assert not torch.equal(out, logits)


def test_non_overlapping_equals_meta():
    from sam2.modeling.sam2_base import SAM2Base

    logits = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 20
    ours = non_overlapping(logits)
    assert torch.equal(ours, SAM2Base._apply_non_overlapping_constraints(None, logits))
    assert ((ours > 0).sum(0) <= 1).all()
    assert torch.equal(non_overlapping(logits[:1]), logits[:1])
