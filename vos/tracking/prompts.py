"""User prompts for one object on one frame (clicks, a box or a mask), checked and normalized.

Torch-free on purpose: the MQTT message schema (`vos.streams.messages`) builds prompts
without loading the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Prompt:
    """A prompt for one object on one frame, in the frame's pixels."""

    mask: np.ndarray | None = None  # bool (H, W)
    points: np.ndarray | None = None  # (N, 2) clicks, x, y
    labels: np.ndarray | None = None  # (N,) 1 object, 0 background
    box: np.ndarray | None = None  # (2, 2) x0, y0 / x1, y1

    @classmethod
    def make(
        cls,
        mask: np.ndarray | None = None,
        points: list | np.ndarray | None = None,
        labels: list | np.ndarray | None = None,
        box: tuple | np.ndarray | None = None,
    ) -> Prompt:
        """Check and normalize a user prompt: a bool mask (H, W), or clicks with labels (1 / 0), and/or a box."""
        if mask is not None and (points is not None or box is not None):
            raise ValueError("give a mask or points/box, not both")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim != 2:
                raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
            return cls(mask=mask.astype(bool))
        if points is None and box is None:
            raise ValueError("a prompt needs a mask, points or a box")
        coords = lab = corners = None
        if points is not None:
            coords = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            if len(coords) == 0:
                raise ValueError("points given without a single click")
            if labels is None:
                raise ValueError("labels must be given with points")
            lab = np.asarray(labels, dtype=np.int32).reshape(-1)
            if len(lab) != len(coords):
                raise ValueError(f"{len(coords)} points but {len(lab)} labels")
            if not np.isin(lab, (0, 1)).all():
                raise ValueError("point labels must be 1 (object) or 0 (background)")
            if not np.isfinite(coords).all():
                raise ValueError("point coordinates must be finite")
        elif labels is not None:
            raise ValueError("labels given without points")
        if box is not None:
            corners = np.asarray(box, dtype=np.float32).reshape(-1)
            if corners.shape != (4,) or not np.isfinite(corners).all():
                raise ValueError("a box is 4 finite numbers: x0, y0, x1, y1")
            corners = corners.reshape(2, 2)
            if not (corners[1] > corners[0]).all():
                raise ValueError("a box needs x1 > x0 and y1 > y0 (x0, y0, x1, y1)")
        return cls(points=coords, labels=lab, box=corners)

    def check_size(self, hw: tuple[int, int]) -> None:
        """ValueError unless the prompt fits an (H, W) frame: a mask of that size, clicks and box corners within
        0..W, 0..H."""
        if self.mask is not None:
            check_mask_size(self.mask.shape, hw)
        h, w = hw
        for what, xy in (("point", self.points), ("box corner", self.box)):
            if xy is None:
                continue
            outside = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
            if outside.any():
                x, y = xy[outside.argmax()]
                raise ValueError(
                    f"{what} ({x:g}, {y:g}) lies outside the {w}x{h} frame: x must be in 0..{w}, y in 0..{h} "
                    "(pixels of the frame as decoded)"
                )

    @property
    def num_points(self) -> int:
        """Clicks plus 2 for a box (its corners), as the decoder counts them."""
        return (0 if self.points is None else len(self.points)) + (0 if self.box is None else 2)


def check_mask_size(mask_hw: tuple[int, ...], frame_hw: tuple[int, ...]) -> None:
    """A mask prompt must have the frame's (H, W); ValueError otherwise."""
    if tuple(mask_hw) != tuple(frame_hw):
        raise ValueError(f"the mask prompt is {tuple(mask_hw)}, the frame is {tuple(frame_hw)}")
