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
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from vos.modeling.memory_attention import ProjectedMemory


@dataclass
class FrameMemory:
    """What one frame leaves for later frames of one object."""

    features: torch.Tensor | None  # (C_mem, E, E), or (L, C_mem) perceiver latents; bfloat16 as Meta's predictor
    obj_ptr: torch.Tensor  # (C,)
    # The features as memory attention reads them (B = 1), made once when first needed; dropped with the features.
    projected: ProjectedMemory | None = None


class MemoryReader:
    """What SAM 2 reads from an object's past for one frame; subclasses say where the frames are kept.

    `cond_frames` are the conditioning (prompted) frames; `recent(t)` is the memory of the
    non-conditioning frame t, or None.
    """

    num_maskmem: int
    max_obj_ptrs: int
    stride: int

    @property
    def cond_frames(self) -> dict[int, FrameMemory]:
        raise NotImplementedError

    def recent(self, frame_idx: int) -> FrameMemory | None:
        raise NotImplementedError

    def select_cond(self, frame_idx: int, max_in_attn: int = -1) -> tuple[dict[int, FrameMemory], dict[int, FrameMemory]]:
        """(selected, unselected) conditioning frames, as Meta's `select_closest_cond_frames`: all when
        `max_in_attn` is -1 or not exceeded; else the closest before `frame_idx`, the closest at or after
        it, then the nearest others up to `max_in_attn`. Unselected ones are read like recent frames."""
        cond = self.cond_frames
        if max_in_attn == -1 or len(cond) <= max_in_attn:
            return cond, {}
        before = max((t for t in cond if t < frame_idx), default=None)
        after = min((t for t in cond if t >= frame_idx), default=None)
        chosen = [t for t in (before, after) if t is not None]
        rest = sorted((t for t in cond if t not in chosen), key=lambda t: abs(t - frame_idx))
        chosen += rest[: max_in_attn - len(chosen)]
        return {t: cond[t] for t in chosen}, {t: m for t, m in cond.items() if t not in chosen}

    def spatial_memories(
        self, frame_idx: int, reverse: bool = False, max_cond_in_attn: int = -1
    ) -> list[tuple[int, FrameMemory]]:
        """(t_pos, memory) to attend to: selected conditioning frames at t_pos 0, then recent frames, oldest first."""
        selected, unselected = self.select_cond(frame_idx, max_cond_in_attn)
        out = [(0, m) for m in selected.values() if m.features is not None]
        sign = -1 if reverse else 1
        for t_pos in range(1, self.num_maskmem):
            t_rel = self.num_maskmem - t_pos
            if t_rel == 1:
                prev = frame_idx - sign
            elif not reverse:
                prev = ((frame_idx - 2) // self.stride) * self.stride - (t_rel - 2) * self.stride
            else:
                prev = -(-(frame_idx + 2) // self.stride) * self.stride + (t_rel - 2) * self.stride
            mem = self.recent(prev)
            if mem is None:
                mem = unselected.get(prev)
            if mem is not None and mem.features is not None:
                out.append((t_pos, mem))
        return out

    def pointers(
        self,
        frame_idx: int,
        reverse: bool = False,
        past_cond_only: bool = True,
        max_ptrs: int | None = None,
        max_cond_in_attn: int = -1,
        signed: bool = True,
    ) -> list[tuple[int, torch.Tensor]]:
        """(temporal distance, obj_ptr): selected conditioning frames (signed distance, or absolute when not
        `signed`), then the `max_ptrs - 1` previous frames.

        `max_ptrs` defaults to the bank's capacity; an offline session with fewer frames passes
        its length, as Meta's predictor does.
        """
        max_ptrs = self.max_obj_ptrs if max_ptrs is None else min(max_ptrs, self.max_obj_ptrs)
        selected, unselected = self.select_cond(frame_idx, max_cond_in_attn)
        sign = -1 if reverse else 1
        out = [
            ((frame_idx - t) * sign if signed else abs(frame_idx - t), m.obj_ptr)
            for t, m in selected.items()
            if not past_cond_only or (t >= frame_idx if reverse else t <= frame_idx)
        ]
        for t_diff in range(1, max_ptrs):
            t = frame_idx - t_diff * sign
            if t < 0:
                break
            mem = self.recent(t)
            if mem is None:
                mem = unselected.get(t)
            if mem is not None:
                out.append((t_diff, mem.obj_ptr))
        return out


class ObjectMemory(MemoryReader):
    """The bounded memory of one object on a stream."""

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
        self.recent_frames: dict[int, FrameMemory] = {}

    @property
    def spatial_window(self) -> int:
        """How many frames before the newest one a non-conditioning memory can still be read."""
        return (self.num_maskmem - 1) * self.stride

    def add(self, frame_idx: int, memory: FrameMemory, conditioning: bool) -> None:
        if conditioning:
            self.recent_frames.pop(frame_idx, None)
            self.cond[frame_idx] = memory
            self._evict_cond()
        else:
            self.recent_frames[frame_idx] = memory
            self._prune_recent(frame_idx)

    def _evict_cond(self) -> None:
        while len(self.cond) > self.max_cond_frames:
            frames = sorted(self.cond)
            victim = frames[1] if self.keep_first_cond_frame and len(frames) > 1 else frames[0]
            del self.cond[victim]

    def _prune_recent(self, frame_idx: int) -> None:
        for t in list(self.recent_frames):
            age = abs(frame_idx - t)
            if age > self.max_obj_ptrs - 2 and age > self.spatial_window:  # the next frame reads 1..max-1 back
                del self.recent_frames[t]
            elif age > self.spatial_window and self.recent_frames[t].features is not None:
                self.recent_frames[t] = FrameMemory(None, self.recent_frames[t].obj_ptr)

    @property
    def cond_frames(self) -> dict[int, FrameMemory]:
        return self.cond

    def recent(self, frame_idx: int) -> FrameMemory | None:
        return self.recent_frames.get(frame_idx)

    def __len__(self) -> int:
        return len(self.cond) + len(self.recent_frames)
