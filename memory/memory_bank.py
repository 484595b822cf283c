"""Per-object bounded memory bank.

SAM 2 reads, for each tracked frame, only: the conditioning (prompted) frames, the
memories of the `num_maskmem - 1` most recent frames (every `stride`-th frame plus the
last one) and the object pointers of the last `max_obj_ptrs - 1` frames. The bank keeps
exactly that: memory features of frames older than the spatial window are dropped
(their pointer is kept while it can still be read), and conditioning frames are capped,
evicting the oldest but never the first prompt unless asked. Memory and time per frame
therefore stay flat however long the stream runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class FrameMemory:
    """What one frame leaves for later frames of one object."""

    features: torch.Tensor | None  # (C_mem, E, E), stored in bfloat16 as Meta's predictor does
    obj_ptr: torch.Tensor  # (C,)


class ObjectMemory:
    """The bounded memory of one object."""

    def __init__(
        self,
        num_maskmem: int,
        max_obj_ptrs: int,
        max_cond_frames: int,
        temporal_stride: int = 1,
        keep_first_cond_frame: bool = True,
    ) -> None:
        if max_cond_frames < 1:
            raise ValueError("max_cond_frames must be at least 1")
        self.num_maskmem = num_maskmem
        self.max_obj_ptrs = max_obj_ptrs
        self.max_cond_frames = max_cond_frames
        self.stride = temporal_stride
        self.keep_first_cond_frame = keep_first_cond_frame
        self.cond: dict[int, FrameMemory] = {}
        self.recent: dict[int, FrameMemory] = {}

    @property
    def spatial_window(self) -> int:
        """How many frames before the newest one a non-conditioning memory can still be read."""
        return (self.num_maskmem - 1) * self.stride

    def add(self, frame_idx: int, memory: FrameMemory, conditioning: bool) -> None:
        if conditioning:
            self.recent.pop(frame_idx, None)
            self.cond[frame_idx] = memory
            self._evict_cond()
        else:
            self.recent[frame_idx] = memory
            self._prune_recent(frame_idx)

    def _evict_cond(self) -> None:
        while len(self.cond) > self.max_cond_frames:
            frames = sorted(self.cond)
            victim = frames[1] if self.keep_first_cond_frame and len(frames) > 1 else frames[0]
            del self.cond[victim]

    def _prune_recent(self, frame_idx: int) -> None:
        for t in list(self.recent):
            age = abs(frame_idx - t)
            if age > self.max_obj_ptrs - 2 and age > self.spatial_window:  # the next frame reads 1..max-1 back
                del self.recent[t]
            elif age > self.spatial_window and self.recent[t].features is not None:
                self.recent[t] = FrameMemory(None, self.recent[t].obj_ptr)

    def spatial_memories(self, frame_idx: int, reverse: bool = False) -> list[tuple[int, torch.Tensor]]:
        """(t_pos, features) to attend to: conditioning frames at t_pos 0, then recent frames, oldest first."""
        out = [(0, m.features) for m in self.cond.values() if m.features is not None]
        sign = -1 if reverse else 1
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos
            if t_rel == 1:
                prev = frame_idx - sign
            elif not reverse:
                prev = ((frame_idx - 2) // self.stride) * self.stride - (t_rel - 2) * self.stride
            else:
                prev = -(-(frame_idx + 2) // self.stride) * self.stride + (t_rel - 2) * self.stride
            mem = self.recent.get(prev)
            if mem is not None and mem.features is not None:
                out.append((t_pos, mem.features))
        return out

    def pointers(self, frame_idx: int, reverse: bool = False, past_cond_only: bool = True) -> list[tuple[int, torch.Tensor]]:
        """(temporal distance, obj_ptr): conditioning frames (signed distance), then the recent ones."""
        sign = -1 if reverse else 1
        out = [
            ((frame_idx - t) * sign, m.obj_ptr)
            for t, m in self.cond.items()
            if not past_cond_only or (t >= frame_idx if reverse else t <= frame_idx)
        ]
        for t_diff in range(1, self.max_obj_ptrs):
            t = frame_idx - t_diff * sign
            if t < 0:
                break
            mem = self.recent.get(t)
            if mem is not None:
                out.append((t_diff, mem.obj_ptr))
        return out

    def __len__(self) -> int:
        return len(self.cond) + len(self.recent)
