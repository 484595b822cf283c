"""The offline session against Meta's video predictor: prompts on a middle frame, forward and
reverse propagation, a correction on a tracked frame and re-propagation from it.

Meta runs with `add_all_frames_to_correct_as_cond=True` (our sessions make every prompted
frame a conditioning frame) and hole filling off.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vos
from tests.video_reference import (
    assert_frame_matches,
    centroid_click,
    ground_truth,
    meta_frame,
    meta_video_predictor,
    write_clip,
)

SESSION_FRAMES = 8  # a session knows its length (Meta's pointer distances are normalized by it): no 16-frame need
PROMPT_FRAME = 4
CORRECTION_FRAME = 6


def clip_and_prompts(davis_root, folder, size: int):
    """car-shadow's first frames as S x S JPEGs in `folder`; the prompts: object 1's mask on PROMPT_FRAME,
    object 2's click there, and a correction (a click on the object, the first one negative) on CORRECTION_FRAME."""
    write_clip(davis_root, "car-shadow", size, folder, n=SESSION_FRAMES)
    gt = ground_truth(davis_root, "car-shadow", PROMPT_FRAME, size)
    click = np.array([[size * 0.2, size * 0.8]], dtype=np.float32)
    correction = np.concatenate([centroid_click(ground_truth(davis_root, "car-shadow", CORRECTION_FRAME, size)), click])
    return gt, click, correction, np.array([1, 0], np.int32)


@torch.inference_mode()
def test_session_matches_video_predictor(davis_root, tracking_checkpoint, tmp_path):
    size = 512
    gt, click, correction, labels = clip_and_prompts(davis_root, tmp_path, size)

    meta = meta_video_predictor(tracking_checkpoint, size)
    meta.add_all_frames_to_correct_as_cond = True
    state = meta.init_state(video_path=str(tmp_path))
    model = vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=size)
    with vos.VideoSession(model, tmp_path, fill_hole_area=0, store_dir=tmp_path) as session:
        assert session.num_frames == SESSION_FRAMES
        # Prompted frame: one object from a mask, one from a click.
        _, _, m = meta.add_new_mask(state, frame_idx=PROMPT_FRAME, obj_id=1, mask=gt)
        session.add_prompt(PROMPT_FRAME, 1, mask=gt)
        _, _, m = meta.add_new_points_or_box(state, frame_idx=PROMPT_FRAME, obj_id=2, points=click, labels=labels[:1])
        assert_frame_matches(session.add_prompt(PROMPT_FRAME, 2, points=click, labels=[1]), meta_frame(state, PROMPT_FRAME, m), (1, 2), PROMPT_FRAME)

        latest = {}

        def compare(meta_iter, ours_iter, expected_frames):
            seen = []
            for (f, _, masks), result in zip(meta_iter, ours_iter, strict=True):
                assert_frame_matches(result, meta_frame(state, f, masks), (1, 2), f)
                latest[f] = result
                seen.append(f)
            assert seen == expected_frames

        compare(meta.propagate_in_video(state), session.propagate(), list(range(PROMPT_FRAME, SESSION_FRAMES)))
        compare(
            meta.propagate_in_video(state, start_frame_idx=PROMPT_FRAME, reverse=True),
            session.propagate(start=PROMPT_FRAME, reverse=True),
            list(range(PROMPT_FRAME, -1, -1)),
        )
        before = session.result(CORRECTION_FRAME).masks[2]
        _, _, m = meta.add_new_points_or_box(state, frame_idx=CORRECTION_FRAME, obj_id=2, points=correction, labels=labels)
        corrected = session.add_prompt(CORRECTION_FRAME, 2, points=correction, labels=labels)
        assert_frame_matches(corrected, meta_frame(state, CORRECTION_FRAME, m), (1, 2), CORRECTION_FRAME)
        assert (corrected.masks[2] != before).any()
        compare(
            meta.propagate_in_video(state, start_frame_idx=CORRECTION_FRAME),
            session.propagate(start=CORRECTION_FRAME),
            list(range(CORRECTION_FRAME, SESSION_FRAMES)),
        )
        # Results read back from the store equal the latest ones yielded, on every frame.
        assert sorted(latest) == list(range(SESSION_FRAMES))
        for f, result in latest.items():
            stored = session.result(f)
            assert all(np.array_equal(stored.logits[o], result.logits[o]) for o in (1, 2))
            assert stored.scores == result.scores
        store = next(tmp_path.glob("vos-session-*"))
        assert len(list(store.rglob("*.pt"))) == 2 * SESSION_FRAMES - 3  # every frame but the prompted ones
    assert not store.exists()


def test_session_rejects_bad_input_and_keeps_state(tiny_checkpoint, tmp_path):
    frames = [np.zeros((32, 48, 3), np.uint8) for _ in range(4)]
    model = vos.load_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, image_size=512)
    with vos.VideoSession(model, frames) as session:
        with pytest.raises(ValueError, match="add a prompt"):
            next(session.propagate())
        with pytest.raises(IndexError, match="outside the video"):
            session.add_prompt(4, 1, points=[(1, 1)], labels=[1])
        with pytest.raises(ValueError, match="mask prompt is"):
            session.add_prompt(0, 1, mask=np.ones((8, 8), bool))
        assert session.object_ids == []
        session.add_prompt(1, 1, box=(2, 2, 20, 20))
        results = list(session.propagate())
        assert [r.frame_index for r in results] == [1, 2, 3]
        assert [r.frame_index for r in session.propagate(reverse=True)] == [1, 0]
        session.remove_object(1)
        assert session.object_ids == [] and session.result(2).masks == {}
    with pytest.raises(FileNotFoundError):
        vos.VideoSession(model, tmp_path / "missing")
    (tmp_path / "00000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="cannot read frame"):
        vos.VideoSession(model, tmp_path)


TRACKING_OVERRIDES = {"max_cond_frames_in_attn": 2, "use_signed_tpos_enc_to_obj_ptrs": False, "non_overlap_masks_for_mem_enc": True}


@pytest.mark.slow  # 34 s: the suite's time (the default fields' parity runs in test_session_matches_video_predictor)
@torch.inference_mode()
def test_non_default_tracking_fields_match_the_video_predictor(davis_root, tracking_checkpoint, tmp_path):
    """Config fields set away from their defaults, on both sides: three prompted frames of which memory
    attention reads the 2 nearest, unsigned pointer distances, non-overlapping masks for the memory
    encoder; propagation forwards and backwards. A session without the overrides differs."""
    size, frames = 512, 10
    write_clip(davis_root, "car-shadow", size, tmp_path, n=frames)
    cond = (1, 4, 8)
    click = np.array([[size * 0.2, size * 0.8]], dtype=np.float32)
    meta = meta_video_predictor(
        tracking_checkpoint, size, overrides=tuple(f"++model.{k}={str(v).lower()}" for k, v in TRACKING_OVERRIDES.items())
    )
    meta.add_all_frames_to_correct_as_cond = True
    # Meta stores memories in bf16; they become float32 where float32 object-pointer tokens join them, but
    # a frame whose memory holds none (here, in reverse tracking) fails on Meta's CPU path with bf16
    # memory. Cast as that promotion does (exact: every bf16 value is a float32 value).
    attend = meta.memory_attention.forward
    meta.memory_attention.forward = lambda curr, memory, curr_pos=None, memory_pos=None, num_obj_ptr_tokens=0: attend(
        curr, memory.float(), curr_pos, memory_pos.float(), num_obj_ptr_tokens
    )
    state = meta.init_state(video_path=str(tmp_path))
    for f in cond:
        meta.add_new_mask(state, frame_idx=f, obj_id=1, mask=ground_truth(davis_root, "car-shadow", f, size))
    meta.add_new_points_or_box(state, frame_idx=4, obj_id=2, points=click, labels=np.array([1], np.int32))
    ref = {("fwd", f): meta_frame(state, f, m) for f, _, m in meta.propagate_in_video(state)}
    ref.update({("rev", f): meta_frame(state, f, m) for f, _, m in meta.propagate_in_video(state, start_frame_idx=8, reverse=True)})

    cfg = vos.load_config("sam2.1_hiera_t", image_size=size)
    cfg = cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update=TRACKING_OVERRIDES)})

    def ours(config, reverse: bool = True, max_frames: int | None = None) -> dict:
        model = vos.load_model(config, checkpoint=tracking_checkpoint, image_size=size)
        with vos.VideoSession(model, tmp_path, fill_hole_area=0, store_dir=tmp_path) as session:
            for f in cond:
                session.add_prompt(f, 1, mask=ground_truth(davis_root, "car-shadow", f, size))
            session.add_prompt(4, 2, points=click, labels=[1])
            out = {("fwd", r.frame_index): r for r in session.propagate(max_frames=max_frames)}
            if reverse:
                out.update({("rev", r.frame_index): r for r in session.propagate(start=8, reverse=True)})
        return out

    results = ours(cfg)
    assert sorted(results) == sorted(ref)
    for key, result in results.items():
        assert_frame_matches(result, ref[key], (1, 2), key[1])
    default = ours("sam2.1_hiera_t", reverse=False, max_frames=3)  # frames 2-3 read 3 prompted frames, not the 2 nearest
    assert max(np.abs(r.logits[1] - ref[k][0][0]).max() for k, r in default.items()) > 1e-3


@pytest.mark.slow
@torch.inference_mode()
def test_clearing_memories_around_corrections_matches_the_video_predictor(davis_root, tracking_checkpoint, tmp_path):
    """`clear_non_cond_mem_around_input`: after a correction, the tracked frames around it are not read as
    memory. In sam2 1.1.0 the option calls a per-object method that is missing
    (`_clear_obj_non_cond_mem_around_input`); the oracle gets it as Meta's all-object
    `_clear_non_cond_mem_around_input` restricted to that object, which is what the call sites ask for."""
    size = 512
    gt, click, correction, labels = clip_and_prompts(davis_root, tmp_path, size)

    meta = meta_video_predictor(tracking_checkpoint, size)
    meta.add_all_frames_to_correct_as_cond = True
    meta.clear_non_cond_mem_around_input = True

    def clear_one(state, frame_idx, obj_idx):
        reach = meta.memory_temporal_stride_for_eval * meta.num_maskmem
        for t in range(frame_idx - reach, frame_idx + reach + 1):
            state["output_dict_per_obj"][obj_idx]["non_cond_frame_outputs"].pop(t, None)

    meta._clear_obj_non_cond_mem_around_input = clear_one
    state = meta.init_state(video_path=str(tmp_path))
    meta.add_new_mask(state, frame_idx=PROMPT_FRAME, obj_id=1, mask=gt)
    meta.add_new_points_or_box(state, frame_idx=PROMPT_FRAME, obj_id=2, points=click, labels=labels[:1])
    list(meta.propagate_in_video(state))
    _, _, m = meta.add_new_points_or_box(state, frame_idx=CORRECTION_FRAME, obj_id=2, points=correction, labels=labels)
    ref = {CORRECTION_FRAME: meta_frame(state, CORRECTION_FRAME, m)}
    ref.update({f: meta_frame(state, f, masks) for f, _, masks in meta.propagate_in_video(state, start_frame_idx=CORRECTION_FRAME)})

    def ours(clear: bool) -> dict:
        model = vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=size)
        with vos.VideoSession(model, tmp_path, fill_hole_area=0, clear_non_cond_mem_around_input=clear) as session:
            session.add_prompt(PROMPT_FRAME, 1, mask=gt)
            session.add_prompt(PROMPT_FRAME, 2, points=click, labels=[1])
            list(session.propagate())
            out = {CORRECTION_FRAME: session.add_prompt(CORRECTION_FRAME, 2, points=correction, labels=labels)}
            out.update({r.frame_index: r for r in session.propagate(start=CORRECTION_FRAME)})
            assert all(session.result(f).masks for f in range(PROMPT_FRAME, SESSION_FRAMES))  # results stay readable
        return out

    results = ours(True)
    assert sorted(results) == sorted(ref)
    for f, result in results.items():
        assert_frame_matches(result, ref[f], (1, 2), f)
    default = ours(False)
    assert max(np.abs(default[f].logits[2] - ref[f][0][1]).max() for f in ref) > 1e-3  # the corrected object
