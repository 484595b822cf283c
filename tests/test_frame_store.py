"""An offline session's per-frame records live on disk; RAM holds the prompted frames and a small cache."""

from __future__ import annotations

import torch

from vos.memory.frame_store import FrameRecord, ObjectHistory
from vos.memory.memory_bank import FrameMemory


def record(i: int, conditioning: bool = False) -> FrameRecord:
    memory = FrameMemory(torch.full((2, 3, 3), float(i), dtype=torch.bfloat16), torch.full((4,), float(i)))
    return FrameRecord(torch.full((1, 1, 8, 8), float(i)), torch.tensor([[i / 10]]), memory, conditioning)


def test_records_round_trip_through_disk_with_a_bounded_cache(tmp_path):
    history = ObjectHistory(tmp_path / "obj", num_maskmem=7, max_obj_ptrs=16, cache_size=4)
    history.put(0, record(0, conditioning=True))
    for f in range(1, 50):
        history.put(f, record(f))
    assert len(history._cache) == 4 and len(list((tmp_path / "obj").glob("*.pt"))) == 49
    again = history.get(3)  # read back from its file
    assert torch.equal(again.logits, record(3).logits) and again.memory.features.dtype == torch.bfloat16
    assert torch.equal(again.memory.obj_ptr, record(3).memory.obj_ptr) and torch.equal(again.score, record(3).score)
    assert [int(m.features[0, 0, 0]) for _, m in history.spatial_memories(50)] == [0, 44, 45, 46, 47, 48, 49]
    assert [int(m.features[0, 0, 0]) for _, m in history.spatial_memories(10, reverse=True)] == [0, 16, 15, 14, 13, 12, 11]
    # A prompt on a tracked frame makes it conditioning: out of the files, into RAM.
    history.put(30, record(30, conditioning=True))
    assert 30 in history.cond_frames and not (tmp_path / "obj" / "0000030.pt").exists() and history.recent(30) is None
    assert [d for d, _ in history.pointers(31)] == [31, 1] + list(range(2, 16))
    history.clear()
    assert list((tmp_path / "obj").glob("*.pt")) == [] and 5 not in history
