"""Auto-discovery: new objects on a stream found by the everything mode, with nobody there to click.

On the frames `DiscoverySettings` names, `Discoverer.new_masks` runs the mask generator on the frame and keeps the
masks that are large enough and no tracked object: a mask is a tracked object when the share of it that tracked
objects cover is above `overlap_thresh` (which an IoU above it with one of them implies). The tracker prompts each
kept mask as a new object on that same frame, with an id never used before on the stream.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from vos.config import DiscoverySettings
from vos.modeling.sam2 import SAM2Model
from vos.segment.generator import MaskGenerator


class Discoverer:
    """The everything mode on a tracker's frames; counts its looks, the objects it found and its seconds."""

    def __init__(self, model: SAM2Model, settings: DiscoverySettings) -> None:
        self.settings = settings
        everything = settings.everything.model_copy(update={"output_mode": "binary_mask"})
        self.generator = MaskGenerator(model, settings=everything)
        self.looks = 0
        self.found = 0
        self.seconds = 0.0

    def due(self, frame_index: int) -> bool:
        n = self.settings.every_n_frames
        return frame_index == 0 if n == 0 else frame_index % n == 0

    def new_masks(self, frame: np.ndarray, tracked: Sequence[np.ndarray], room: int) -> list[np.ndarray]:
        """(H, W) bool masks of at most `room` objects on `frame` (H, W, 3) that none of `tracked` is, best first."""
        started = time.perf_counter()
        records = self.generator.generate(frame)
        s = self.settings
        taken: list[np.ndarray] = []
        covered = np.zeros(frame.shape[:2], dtype=bool)
        for mask in tracked:
            covered |= mask
        for record in sorted(records, key=lambda r: -r["predicted_iou"]):
            if len(taken) >= min(room, s.max_new_per_frame):
                break
            mask = record["segmentation"]
            area = int(mask.sum())
            if area < s.min_area or (mask & covered).sum() / area > s.overlap_thresh:
                continue
            taken.append(mask)
            covered |= mask
        self.looks += 1
        self.found += len(taken)
        self.seconds += time.perf_counter() - started
        return taken
