"""Mask post-processing of Meta's video predictor: hole filling and non-overlapping objects."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

# Logit given to filled holes: just foreground, as Meta's `fill_holes_in_mask_scores`.
HOLE_FILL_LOGIT = 0.1
# Objects that lose a pixel to a higher-scoring one are pushed at least this far below 0.
NON_OVERLAP_MAX_LOGIT = -10.0
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def fill_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """(B, 1, h, w) mask logits -> the same with small background regions made foreground.

    A hole is an 8-connected component of pixels with logit <= 0 of at most `max_area`
    pixels (touching the border or not), as Meta's CUDA connected-components kernel finds
    them; its pixels get a logit of 0.1. `max_area` 0 returns the logits unchanged.
    """
    if max_area <= 0:
        return logits
    background = (logits <= 0).cpu().numpy()
    holes = np.zeros_like(background)
    for i in range(background.shape[0]):
        labels, count = ndimage.label(background[i, 0], structure=_EIGHT_CONNECTED)
        if count == 0:
            continue
        areas = np.bincount(labels.ravel(), minlength=count + 1)
        small = areas <= max_area
        small[0] = False  # label 0 is the foreground
        holes[i, 0] = small[labels]
    if not holes.any():
        return logits
    return torch.where(torch.from_numpy(holes).to(logits.device), HOLE_FILL_LOGIT, logits)


def non_overlapping(logits: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) logits of B objects -> each pixel stays positive for at most the highest-scoring object."""
    if logits.shape[0] <= 1:
        return logits
    winner = torch.argmax(logits, dim=0, keepdim=True)
    index = torch.arange(logits.shape[0], device=logits.device).view(-1, 1, 1, 1)
    return torch.where(winner == index, logits, torch.clamp(logits, max=NON_OVERLAP_MAX_LOGIT))
