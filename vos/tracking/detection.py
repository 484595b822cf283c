"""Discovery by class: a detector's boxes on some frames of a stream become tracked objects, with their class.

On the frames `DetectorSettings.every_n_frames` names, `DetectionDiscoverer.new_detections` runs the detector and
keeps the detections that are no tracked object: a detection is a tracked object when its box's IoU with the box
around that object's last mask (or its pending box prompt) is above `cover_thresh`. The tracker prompts each kept
box as a new object on that same frame, with a fresh id, and remembers its class and score. The objects it added
that stay absent (object score logit <= 0) for `retire_after` frames are removed, their memory freed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vos.config import DetectorSettings
from vos.detection.detector import Detector
from vos.boxes import box_iou


@dataclass(frozen=True)
class Detection:
    """A detection that becomes an object: box (x0, y0, x1, y1) in frame pixels, class name, detector score."""

    box: tuple[float, float, float, float]
    class_name: str
    score: float


def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """The (4,) x0, y0, x1, y1 box around an (H, W) bool mask (pixel edges), None when it is empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not rows.size:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


class DetectionDiscoverer:
    """A detector on a tracker's frames; counts its looks, detections, objects added and retired, and its seconds."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.settings: DetectorSettings = detector.settings
        self._absent: dict[int, int] = {}  # object added by detection -> frames absent in a row
        self.looks = 0
        self.detections = 0
        self.found = 0
        self.retired = 0
        self.seconds = 0.0

    def due(self, frame_index: int) -> bool:
        n = self.settings.every_n_frames
        return frame_index == 0 if n == 0 else frame_index % n == 0

    def new_detections(self, frame: np.ndarray, known: Sequence[np.ndarray], room: int) -> list[Detection]:
        """At most `room` detections on `frame` (H, W, 3) that none of the `known` boxes ((4,) each) is, best first."""
        started = time.perf_counter()
        found = self.detector(frame)
        taken: list[Detection] = []
        boxes = np.stack(known) if known else np.zeros((0, 4), np.float32)
        limit = min(room, self.settings.max_new_per_frame)
        for box, name, score in zip(found.boxes, found.class_names, found.scores):
            if len(taken) >= limit:
                break
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            if len(boxes) and box_iou(box, boxes).max() > self.settings.cover_thresh:
                continue
            taken.append(Detection((float(box[0]), float(box[1]), float(box[2]), float(box[3])), name, float(score)))
            boxes = np.concatenate([boxes, box[None]])
        self.looks += 1
        self.detections += len(found)
        self.found += len(taken)
        self.seconds += time.perf_counter() - started
        return taken

    def added(self, obj_id: int) -> None:
        self._absent[obj_id] = 0

    def clear(self) -> None:
        """Forget the objects added (the tracker was reset); the counts stay."""
        self._absent.clear()

    def forget(self, obj_id: int) -> None:
        self._absent.pop(obj_id, None)

    def to_retire(self, scores: dict[int, float]) -> list[int]:
        """The objects added by detection that `retire_after` frames in a row, this one's `scores` included, found
        absent (object score logit <= 0); they are forgotten here."""
        if not self.settings.retire_after:
            return []
        retire = []
        for obj_id in list(self._absent):
            if obj_id not in scores:
                continue
            self._absent[obj_id] = self._absent[obj_id] + 1 if scores[obj_id] <= 0 else 0
            if self._absent[obj_id] >= self.settings.retire_after:
                retire.append(obj_id)
                del self._absent[obj_id]
        self.retired += len(retire)
        return retire
