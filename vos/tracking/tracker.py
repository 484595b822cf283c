"""Streaming tracker: one per stream, frame in, masks out, with a bounded memory per object.

    tracker = vos.Tracker(model)
    tracker.add_prompt(obj_id=1, mask=bool_hw)        # or points=[(x, y)], labels=[1], or box=(x0, y0, x1, y1)
    result = tracker.step(frame)                      # prompts added before a step apply to that frame

A prompt for a new object starts tracking it on the next frame, segmented from the prompt
alone. Once the tracker has seen a frame, `add_prompt` refuses a prompt that does not fit its size
(ValueError, nothing changed); one that does not fit the next frame (the first one, or a frame of
another size) is dropped on it and listed in `TrackResult.refused`, the other objects tracked as ever. A prompt for a tracked object is a correction: clicks and boxes refine the mask
tracked on that frame (a mask prompt replaces it). Either way the frame becomes a
conditioning frame of the object. Memory per object is bounded (`memory.memory_bank`),
so time and memory per frame stay flat however long the stream runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vos.config import TrackerConfig, tracker_config
from vos.detection.detector import Detector
from vos.memory.memory_bank import ObjectMemory
from vos.modeling.sam2 import SAM2Model
from vos.tracking.detection import DetectionDiscoverer, mask_box
from vos.tracking.discovery import Discoverer
from vos.tracking.postprocess import non_overlapping
from vos.tracking.prompts import Prompt
from vos.tracking.segmenter import FrameFeatures, FrameSegmenter, ObjectRequest
from vos.tracking.transforms import check_rgb_image, upscale_logits

log = logging.getLogger(__name__)


@dataclass
class TrackResult:
    frame_index: int
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # bool (H, W)
    logits: dict[int, np.ndarray] = field(default_factory=dict)  # float32 (H, W), Meta's video_res_masks
    scores: dict[int, float] = field(default_factory=dict)  # object score logits
    new_objects: list[int] = field(default_factory=list)  # found on this frame by auto-discovery or the detector
    retired: list[int] = field(default_factory=list)  # objects the detector added, removed after this frame: absent
    classes: dict[int, str] = field(default_factory=dict)  # class names of the objects the detector found
    class_scores: dict[int, float] = field(default_factory=dict)  # the detector's scores when it found them
    refused: dict[int, str] = field(default_factory=dict)  # prompts dropped on this frame (not fitting it): why

    @classmethod
    def from_logits(
        cls,
        frame_index: int,
        obj_ids: list[int],
        low_res_logits: list[torch.Tensor],
        scores: list[torch.Tensor],
        hw: tuple[int, int],
        non_overlap: bool,
    ) -> TrackResult:
        """Objects' (1, 1, 4E, 4E) logits, upscaled to the frame's (H, W) (and kept apart if asked)."""
        result = cls(frame_index)
        if not obj_ids:
            return result
        logits = upscale_logits(torch.cat(low_res_logits), hw)
        if non_overlap:
            logits = non_overlapping(logits)
        logits = logits[:, 0].cpu().numpy()
        for i, (obj_id, score) in enumerate(zip(obj_ids, scores)):
            result.logits[obj_id] = logits[i]
            result.masks[obj_id] = logits[i] > 0
            result.scores[obj_id] = float(score)
        return result


class Tracker:
    """Tracks any number of objects through a stream of frames.

    Options (see `vos.config.TrackerConfig`): fill_hole_area, non_overlap_masks, max_objects,
    max_cond_frames, keep_first_cond_frame, precision, compile, discover (auto-discovery of new
    objects: `vos.tracking.discovery`; each result lists the ones found on its frame), detector (objects found by
    class: `vos.tracking.detection`; settings, or a `vos.Detector` already loaded).
    """

    def __init__(self, model: SAM2Model, config: TrackerConfig | None = None, **options: Any) -> None:
        detector = options.pop("detector", None)
        if isinstance(detector, Detector):
            options["detector"] = detector.settings
        elif detector is not None:
            options["detector"] = detector
        self.config = tracker_config(config, **options)
        self.model = model.eval()
        self.segmenter = FrameSegmenter(self.model, self.config.fill_hole_area, self.config.precision, self.config.compile)
        self.discoverer = Discoverer(self.model, self.config.discover) if self.config.discover is not None else None
        self.detection: DetectionDiscoverer | None = None
        if self.config.detector is not None:
            loaded = detector if isinstance(detector, Detector) else Detector(self.config.detector)
            self.detection = DetectionDiscoverer(loaded)
        self.reset()

    def reset(self) -> None:
        """Forget every object and prompt; the next frame is frame 0."""
        self.frame_index = 0
        self._memories: dict[int, ObjectMemory] = {}
        self._pending: dict[int, Prompt] = {}
        self._last_masks: dict[int, np.ndarray] = {}  # the last frame's, for auto-discovery
        self.classes: dict[int, tuple[str, float]] = {}  # objects found by the detector: class name, its score
        if self.detection is not None:
            self.detection.clear()
        self._highest_id = 0  # the highest object id prompted since the reset
        self.frame_size: tuple[int, int] | None = None  # (H, W) of the last frame stepped

    @property
    def object_ids(self) -> list[int]:
        return list(dict.fromkeys([*self._memories, *self._pending]))

    def add_prompt(
        self,
        obj_id: int,
        mask: np.ndarray | None = None,
        points: list | np.ndarray | None = None,
        labels: list | np.ndarray | None = None,
        box: tuple | np.ndarray | None = None,
    ) -> None:
        """Prompt an object on the next frame: a bool mask (H, W), or clicks with labels (1 / 0), and/or a box.

        A later prompt for the same object before that frame replaces this one.
        """
        self.set_prompt(obj_id, Prompt.make(mask, points, labels, box))

    def set_prompt(self, obj_id: int, prompt: Prompt) -> None:
        """`add_prompt` with an already checked `Prompt`; ValueError for an object beyond `max_objects`, or for a
        prompt that does not fit the frames seen so far."""
        if self.frame_size is not None:
            try:
                prompt.check_size(self.frame_size)
            except ValueError as e:
                raise ValueError(f"object {obj_id}: {e}") from None
        known = self._memories.keys() | self._pending.keys()
        if obj_id not in known and len(known) >= self.config.max_objects:
            raise ValueError(
                f"already {len(known)} objects, the most this tracker takes (max_objects); remove one first"
            )
        self._pending[obj_id] = prompt
        self._highest_id = max(self._highest_id, obj_id)

    def remove_object(self, obj_id: int) -> None:
        self._memories.pop(obj_id, None)
        self._pending.pop(obj_id, None)
        self._last_masks.pop(obj_id, None)
        self.classes.pop(obj_id, None)
        if self.detection is not None:
            self.detection.forget(obj_id)

    def _new_memory(self) -> ObjectMemory:
        t = self.model.cfg.tracking
        return ObjectMemory(
            t.num_maskmem, t.max_obj_ptrs_in_encoder, self.config.max_cond_frames,
            t.memory_temporal_stride_for_eval, self.config.keep_first_cond_frame,
        )

    @property
    def idle(self) -> bool:
        """No object to track or prompt: `step` would not run the model."""
        return not self._memories and not self._pending

    @torch.inference_mode()
    def step(self, frame: np.ndarray, features: FrameFeatures | None = None) -> TrackResult:
        """Segment every object on an HxWx3 uint8 RGB frame and update their memories.

        `features`: the frame's image features when already computed (`FrameSegmenter.encode_images`,
        batched across streams). A frame with no object to track does not run the model.
        """
        check_rgb_image(frame)
        hw = (frame.shape[0], frame.shape[1])
        self.frame_size = hw
        refused = self._drop_misfits(hw)
        new_objects = self._discover(frame) if self.discoverer and self.discoverer.due(self.frame_index) else []
        if self.detection is not None and self.detection.due(self.frame_index):
            new_objects = self._detect(frame)
        if self.idle:
            self.frame_index += 1
            return TrackResult(self.frame_index - 1, new_objects=new_objects, refused=refused)
        obj_ids = self.object_ids
        requests = [ObjectRequest(self._pending.get(i), self._memories.get(i)) for i in obj_ids]
        if features is None:
            features = self.segmenter.encode_image(frame)
        elif features.size != hw:
            raise ValueError(f"features are of a {features.size} frame, the frame is {hw}")
        steps = self.segmenter.run(features, requests, self.frame_index)
        self._pending = {}
        for obj_id, s in zip(obj_ids, steps):
            memory = self._memories.setdefault(obj_id, self._new_memory())
            memory.add(self.frame_index, s.memory, conditioning=s.conditioning)
        result = TrackResult.from_logits(
            self.frame_index, obj_ids, [s.low_res_logits for s in steps], [s.score for s in steps], hw,
            self.config.non_overlap_masks,
        )
        result.new_objects, result.refused = new_objects, refused
        if self.discoverer is not None or self.detection is not None:  # a copy: removals change this one
            self._last_masks = dict(result.masks)
        if self.detection is not None:
            self._label(result)
        self.frame_index += 1
        return result

    def _label(self, result: TrackResult) -> None:
        """The result's classes; the objects the detector added that stayed absent long enough are removed."""
        for obj_id, (name, score) in self.classes.items():
            if obj_id in result.masks:
                result.classes[obj_id], result.class_scores[obj_id] = name, score
        result.retired = self.detection.to_retire(result.scores)
        for obj_id in result.retired:
            self.remove_object(obj_id)

    def _drop_misfits(self, hw: tuple[int, int]) -> dict[int, str]:
        """Drops the pending prompts that do not fit an (H, W) frame (a new object with them); why, by object."""
        refused = {}
        for obj_id, prompt in list(self._pending.items()):
            try:
                prompt.check_size(hw)
            except ValueError as e:
                refused[obj_id] = f"object {obj_id}: {e}"
                del self._pending[obj_id]
                log.warning("frame %d: prompt refused: %s", self.frame_index, refused[obj_id])
        return refused

    def _detect(self, frame: np.ndarray) -> list[int]:
        """Prompt, by their boxes, the objects the detector finds on `frame` that no tracked or prompted object is;
        their ids. Tracked objects are known by the boxes around their last masks, prompted ones by their boxes."""
        room = self.config.max_objects - len(self.object_ids)
        if room <= 0:
            return []
        known = [b for m in self._last_masks.values() if m.shape == frame.shape[:2] and (b := mask_box(m)) is not None]
        for prompt in self._pending.values():
            box = prompt.box.reshape(4) if prompt.box is not None else None
            box = mask_box(prompt.mask) if prompt.mask is not None else box
            if box is not None:
                known.append(np.asarray(box, dtype=np.float32))
        added = []
        for detection in self.detection.new_detections(frame, known, room):
            obj_id = self._highest_id + 1  # never an id used since the reset
            self.set_prompt(obj_id, Prompt.make(box=detection.box))
            self.classes[obj_id] = (detection.class_name, detection.score)
            self.detection.added(obj_id)
            added.append(obj_id)
        return added

    def _discover(self, frame: np.ndarray) -> list[int]:
        """Prompt the objects the everything mode finds on `frame` that no tracked or prompted object is; their ids.
        Tracked objects are known by their masks on the previous frame and their mask prompts for this one."""
        room = self.config.max_objects - len(self.object_ids)
        if room <= 0:
            return []
        known = [m for m in self._last_masks.values() if m.shape == frame.shape[:2]]
        known += [p.mask for p in self._pending.values() if p.mask is not None and p.mask.shape == frame.shape[:2]]
        added = []
        for mask in self.discoverer.new_masks(frame, known, room):
            obj_id = self._highest_id + 1  # never an id used since the reset
            self.set_prompt(obj_id, Prompt(mask=mask))
            added.append(obj_id)
        return added
