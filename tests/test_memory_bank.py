"""The memory bank keeps exactly what SAM 2 reads, and stays bounded on an endless stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vos
from vos.memory.memory_bank import FrameMemory, ObjectMemory


def entry(i: int) -> FrameMemory:
    return FrameMemory(torch.full((2, 1, 1), float(i)), torch.full((4,), float(i)))


def test_bank_stays_bounded_and_keeps_what_is_read():
    bank = ObjectMemory(num_maskmem=7, max_obj_ptrs=16, max_cond_frames=4)
    bank.add(0, entry(0), conditioning=True)
    for f in range(1, 1000):
        bank.add(f, entry(f), conditioning=False)
        assert len(bank.recent_frames) <= 15
        assert sum(m.features is not None for m in bank.recent_frames.values()) <= bank.spatial_window + 1
    spatial = bank.spatial_memories(1000)
    assert [t for t, _ in spatial] == [0, 1, 2, 3, 4, 5, 6]
    assert [int(m.features[0, 0, 0]) for _, m in spatial] == [0, 994, 995, 996, 997, 998, 999]
    ptrs = bank.pointers(1000)
    assert [d for d, _ in ptrs] == [1000] + list(range(1, 16))
    assert [int(p[0]) for _, p in ptrs] == [0] + list(range(999, 984, -1))


def test_conditioning_frames_are_capped_keeping_the_first_prompt():
    bank = ObjectMemory(num_maskmem=7, max_obj_ptrs=16, max_cond_frames=3)
    for f in (0, 10, 20, 30, 40):
        bank.add(f, entry(f), conditioning=True)
    assert sorted(bank.cond) == [0, 30, 40]
    bank = ObjectMemory(num_maskmem=7, max_obj_ptrs=16, max_cond_frames=3, keep_first_cond_frame=False)
    for f in (0, 10, 20, 30):
        bank.add(f, entry(f), conditioning=True)
    assert sorted(bank.cond) == [10, 20, 30]
    with pytest.raises(ValueError):
        ObjectMemory(7, 16, max_cond_frames=0)


def test_temporal_stride_picks_every_rth_frame_plus_the_last():
    bank = ObjectMemory(num_maskmem=7, max_obj_ptrs=16, max_cond_frames=2, temporal_stride=5)
    bank.add(0, entry(0), conditioning=True)
    for f in range(1, 100):
        bank.add(f, entry(f), conditioning=False)
    assert [int(m.features[0, 0, 0]) for _, m in bank.spatial_memories(100)][1:] == [75, 80, 85, 90, 95, 99]


def test_tracker_rejects_bad_prompts_and_frames_without_losing_state(tiny_checkpoint):
    model = vos.load_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, image_size=512)
    tracker = vos.Tracker(model)
    with pytest.raises(ValueError, match="labels"):
        tracker.add_prompt(1, points=[(1, 2), (3, 4)], labels=[1])
    with pytest.raises(ValueError, match="not both"):
        tracker.add_prompt(1, mask=np.zeros((4, 4), bool), points=[(1, 2)], labels=[1])
    with pytest.raises(ValueError, match="1 \\(object\\) or 0"):
        tracker.add_prompt(1, points=[(1, 2)], labels=[5])
    tracker.add_prompt(1, mask=np.ones((8, 8), bool))  # the tracker has seen no frame: checked on the next one
    frame = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        tracker.step(frame.astype(np.float32))
    assert tracker.frame_index == 0 and tracker.object_ids == [1]
    tracker.add_prompt(2, box=(2, 2, 12, 12))
    result = tracker.step(frame)  # object 1's prompt is dropped on it, object 2 is tracked
    assert result.frame_index == 0 and set(result.masks) == {2} and result.masks[2].shape == (16, 16)
    assert result.refused == {1: "object 1: the mask prompt is (8, 8), the frame is (16, 16)"} and tracker.object_ids == [2]
    with pytest.raises(ValueError, match=r"object 3: box corner \(-16384, -16384\) lies outside the 16x16 frame"):
        tracker.add_prompt(3, box=(-16384, -16384, 32768, 32768))  # refused at once, nothing changed
    with pytest.raises(ValueError, match=r"object 2: point \(99, 1\) lies outside"):
        tracker.add_prompt(2, points=[(99, 1)], labels=[1])
    later = tracker.step(frame)
    assert later.frame_index == 1 and set(later.masks) == {2} and later.refused == {}
    tracker.reset()
    assert tracker.object_ids == [] and tracker.frame_index == 0 and tracker.frame_size is None
