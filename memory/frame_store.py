"""Every frame's result for one object of an offline session, kept on disk.

An offline session (`vos.VideoSession`) may propagate in reverse after going forward, or
re-propagate after a correction, so any frame's memory may be read again. Meta's video
predictor keeps all of them in RAM (about 0.79 MB per frame and object at 1024 px); here
each frame's record is a file, and only the conditioning frames and a small cache of the
most recently used records stay in RAM.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from vos.memory.memory_bank import FrameMemory, MemoryReader


@dataclass
class FrameRecord:
    """One object on one frame."""

    logits: torch.Tensor  # (1, 1, 4E, 4E) float32 low-res mask logits (holes filled)
    score: torch.Tensor  # (1, 1) object score logit
    memory: FrameMemory
    conditioning: bool


class ObjectHistory(MemoryReader):
    """The records of one object: conditioning frames in RAM, other frames in `folder`."""

    def __init__(self, folder: Path, num_maskmem: int, max_obj_ptrs: int, stride: int = 1, cache_size: int = 32) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs = max_obj_ptrs
        self.stride = stride
        self.cache_size = cache_size
        self._cond: dict[int, FrameRecord] = {}
        self._on_disk: set[int] = set()
        self._forgotten: set[int] = set()  # tracked frames whose memory is not to be read (`forget_around`)
        self._cache: OrderedDict[int, FrameRecord] = OrderedDict()

    def _path(self, frame_idx: int) -> Path:
        return self.folder / f"{frame_idx:07d}.pt"

    def put(self, frame_idx: int, record: FrameRecord) -> None:
        self._forgotten.discard(frame_idx)
        if record.conditioning:
            self._cond[frame_idx] = record
            self._drop_file(frame_idx)
            return
        self._cond.pop(frame_idx, None)
        torch.save(
            {
                "logits": record.logits, "score": record.score,
                "features": record.memory.features, "obj_ptr": record.memory.obj_ptr,
            },
            self._path(frame_idx),
        )
        self._on_disk.add(frame_idx)
        self._remember(frame_idx, record)

    def forget_around(self, frame_idx: int) -> None:
        """Meta's `clear_non_cond_mem_around_input`: the tracked (not prompted) frames within
        `stride * num_maskmem` of `frame_idx` stop being read as memory until tracked again;
        their results stay readable (`get(..., forgotten=True)`)."""
        reach = self.stride * self.num_maskmem
        self._forgotten.update(t for t in self._on_disk if abs(t - frame_idx) <= reach)

    def get(self, frame_idx: int, forgotten: bool = False) -> FrameRecord | None:
        """The frame's record; None for a frame forgotten as memory unless `forgotten`."""
        if frame_idx in self._forgotten and not forgotten:
            return None
        if frame_idx in self._cond:
            return self._cond[frame_idx]
        if frame_idx in self._cache:
            self._cache.move_to_end(frame_idx)
            return self._cache[frame_idx]
        if frame_idx not in self._on_disk:
            return None
        d = torch.load(self._path(frame_idx), map_location="cpu", weights_only=True)
        record = FrameRecord(d["logits"], d["score"], FrameMemory(d["features"], d["obj_ptr"]), conditioning=False)
        self._remember(frame_idx, record)
        return record

    def _remember(self, frame_idx: int, record: FrameRecord) -> None:
        """Keep the record in the LRU cache; only the `num_maskmem` most recently used keep their projections."""
        self._cache[frame_idx] = record
        self._cache.move_to_end(frame_idx)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        for i, old in enumerate(reversed(self._cache.values())):
            if i >= self.num_maskmem:
                old.memory.projected = None

    def _drop_file(self, frame_idx: int) -> None:
        if frame_idx in self._on_disk:
            self._path(frame_idx).unlink(missing_ok=True)
            self._on_disk.discard(frame_idx)
        self._cache.pop(frame_idx, None)

    def __contains__(self, frame_idx: int) -> bool:
        return frame_idx in self._cond or frame_idx in self._on_disk

    @property
    def cond_frames(self) -> dict[int, FrameMemory]:
        return {t: r.memory for t, r in self._cond.items()}

    def recent(self, frame_idx: int) -> FrameMemory | None:
        if frame_idx in self._cond:
            return None
        record = self.get(frame_idx)
        return None if record is None else record.memory

    def clear(self) -> None:
        """Delete every record and its file."""
        for t in list(self._on_disk):
            self._drop_file(t)
        self._cond.clear()
        self._forgotten.clear()
        self._cache.clear()
