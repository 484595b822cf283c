"""Offline video sessions: prompts on any frame, propagation forwards and backwards, corrections.

    with vos.VideoSession(model, "clip.mp4") as session:   # a video file, a folder of frames, or a sequence of RGB arrays
        session.add_prompt(0, obj_id=1, mask=bool_hw)
        for result in session.propagate():               # forwards from the first prompted frame
            ...
        session.add_prompt(40, obj_id=1, points=[(x, y)], labels=[0])   # a correction on a tracked frame
        for result in session.propagate(start=40):       # re-propagate from there
            ...
        session.result(12)                               # any frame's current result

Behaves as Meta's `SAM2VideoPredictor` with `add_all_frames_to_correct_as_cond=True`: every
prompted frame, correction or not, becomes a conditioning frame of its object. Results and
memories of every frame are kept on disk (`memory.frame_store`), so RAM does not grow with
the video's length; frames are read from the source when they are needed.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vos.config import TrackerConfig, tracker_config
from vos.memory.frame_store import FrameRecord, ObjectHistory
from vos.modeling.sam2 import SAM2Model
from vos.streams.sources.frame_folder import FrameFolder
from vos.streams.sources.video_file import VideoFile
from vos.tracking.prompts import Prompt
from vos.tracking.segmenter import FrameFeatures, FrameSegmenter, ObjectRequest, ObjectStep
from vos.tracking.tracker import TrackResult


class VideoSession:
    """Interactive segmentation of a finite, seekable video: a video file, a folder of frames, or a sequence of arrays.

    Options as `vos.Tracker` (`fill_hole_area`, `non_overlap_masks`); `store_dir` is where the
    per-frame records go (a temporary folder inside it, removed by `close()`).
    """

    def __init__(
        self,
        model: SAM2Model,
        frames: Sequence[np.ndarray] | str | Path,
        config: TrackerConfig | None = None,
        store_dir: str | Path | None = None,
        **options: Any,
    ) -> None:
        self.config = tracker_config(config, **options)
        self.model = model.eval()
        self._opened = _open_video(frames) if isinstance(frames, (str, Path)) else None
        self.frames = self._opened if self._opened is not None else frames
        self.num_frames = len(self.frames)
        if self.num_frames == 0:
            raise ValueError("the video has no frames")
        first = np.asarray(self.frames[0])
        self.frame_size: tuple[int, int] = (first.shape[0], first.shape[1])
        self.segmenter = FrameSegmenter(self.model, self.config.fill_hole_area, self.config.precision, self.config.compile)
        self._store = tempfile.TemporaryDirectory(prefix="vos-session-", dir=store_dir)
        self._objects: dict[int, ObjectHistory] = {}
        self._tracked: dict[int, dict[int, bool]] = {}  # object -> frame -> tracked in reverse
        self._prompted: set[tuple[int, int]] = set()  # (object, frame) prompted since the last propagation
        self._cached: tuple[int, FrameFeatures] | None = None
        self._serial = itertools.count()  # store folders stay distinct when an id is removed and reused

    # -- resources ---------------------------------------------------------------------------
    def close(self) -> None:
        """Delete the stored records (and close the video file if the session opened it)."""
        self._objects.clear()
        self._store.cleanup()
        if isinstance(self._opened, VideoFile):
            self._opened.close()

    def __enter__(self) -> VideoSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- prompts -----------------------------------------------------------------------------
    @property
    def object_ids(self) -> list[int]:
        return list(self._objects)

    def _check_frame(self, frame_idx: int) -> None:
        if not 0 <= frame_idx < self.num_frames:
            raise IndexError(f"frame {frame_idx} is outside the video (0..{self.num_frames - 1})")

    def _features(self, frame_idx: int) -> FrameFeatures:
        if self._cached is None or self._cached[0] != frame_idx:
            ff = self.segmenter.encode_image(np.asarray(self.frames[frame_idx]))
            if ff.size != self.frame_size:
                raise ValueError(f"frame {frame_idx} is {ff.size}, the video's first frame is {self.frame_size}")
            self._cached = (frame_idx, ff)
        return self._cached[1]

    def _new_history(self, obj_id: int) -> ObjectHistory:
        t = self.model.cfg.tracking
        folder = Path(self._store.name) / f"object-{obj_id}-{next(self._serial)}"
        return ObjectHistory(folder, t.num_maskmem, t.max_obj_ptrs_in_encoder, t.memory_temporal_stride_for_eval)

    @torch.inference_mode()
    def add_prompt(
        self,
        frame_idx: int,
        obj_id: int,
        mask: np.ndarray | None = None,
        points: list | np.ndarray | None = None,
        labels: list | np.ndarray | None = None,
        box: tuple | np.ndarray | None = None,
    ) -> TrackResult:
        """Prompt an object on a frame; returns that frame's result for every object that has one.

        On a frame the object was not tracked on yet, it is segmented from the prompt alone;
        on a tracked frame, clicks and boxes correct the tracked mask. Clicks replace earlier
        clicks of the object on that frame; its current logits there feed the decoder.
        """
        self._check_frame(frame_idx)
        prompt = Prompt.make(mask, points, labels, box)
        ff = self._features(frame_idx)
        prompt.check_size(ff.size)
        history = self._objects.get(obj_id)
        tracked = self._tracked.get(obj_id, {})
        initial = frame_idx not in tracked
        prev = history.get(frame_idx) if history is not None and prompt.mask is None else None
        request = ObjectRequest(prompt, None if initial else history, None if prev is None else prev.logits)
        (step,) = self.segmenter.run(
            ff, [request], frame_idx, reverse=False if initial else tracked[frame_idx], num_frames=self.num_frames
        )
        if history is None:
            history = self._objects[obj_id] = self._new_history(obj_id)
            self._tracked[obj_id] = {}
        history.put(frame_idx, _record(step))
        self._prompted.add((obj_id, frame_idx))
        return self.result(frame_idx)

    def remove_object(self, obj_id: int) -> None:
        history = self._objects.pop(obj_id, None)
        if history is not None:
            history.clear()
        self._tracked.pop(obj_id, None)
        self._prompted = {p for p in self._prompted if p[0] != obj_id}

    # -- propagation -------------------------------------------------------------------------
    @torch.inference_mode()
    def propagate(self, start: int | None = None, reverse: bool = False, max_frames: int | None = None) -> Iterator[TrackResult]:
        """Track every object frame by frame from `start` (default: the first prompted frame), yielding results.

        Prompted frames keep their prompted result; every other frame is tracked from memory
        and replaces what that frame had. In reverse, frames go down to 0 (none if `start` is 0).
        """
        if not self._objects:
            raise ValueError("add a prompt before propagating")
        clear = self.config.clear_non_cond_mem_around_input
        if clear:
            for obj_id, prompted in self._prompted:
                if obj_id in self._objects:
                    self._objects[obj_id].forget_around(prompted)
        self._prompted.clear()
        if start is None:
            start = min(min(h.cond_frames) for h in self._objects.values())
        self._check_frame(start)
        count = self.num_frames if max_frames is None else max_frames
        if reverse:
            order = range(start, max(start - count, 0) - 1, -1) if start > 0 else range(0)
        else:
            order = range(start, min(start + count, self.num_frames - 1) + 1)
        for frame_idx in order:
            ids = list(self._objects)
            to_track = [i for i in ids if frame_idx not in self._objects[i].cond_frames]
            if clear:  # as Meta's predictor, on reaching an object's prompted frame
                for i in set(ids) - set(to_track):
                    self._objects[i].forget_around(frame_idx)
            steps: dict[int, ObjectStep] = {}
            if to_track:
                requests = [ObjectRequest(memory=self._objects[i]) for i in to_track]
                out = self.segmenter.run(self._features(frame_idx), requests, frame_idx, reverse, self.num_frames)
                steps = dict(zip(to_track, out))
            for obj_id in ids:
                if obj_id in steps:
                    self._objects[obj_id].put(frame_idx, _record(steps[obj_id]))
                self._tracked[obj_id][frame_idx] = reverse
            yield self.result(frame_idx)

    def result(self, frame_idx: int) -> TrackResult:
        """The current result on a frame, for every object that has one there."""
        self._check_frame(frame_idx)
        records = {i: h.get(frame_idx, forgotten=True) for i, h in self._objects.items()}
        records = {i: r for i, r in records.items() if r is not None}
        return TrackResult.from_logits(
            frame_idx, list(records), [r.logits for r in records.values()], [r.score for r in records.values()],
            self.frame_size, self.config.non_overlap_masks,
        )


def _open_video(path: str | Path) -> FrameFolder | VideoFile:
    """A folder of frames or a video file."""
    return FrameFolder(path) if Path(path).is_dir() else VideoFile(path)


def _record(step: ObjectStep) -> FrameRecord:
    return FrameRecord(step.low_res_logits, step.score, step.memory, step.conditioning)
