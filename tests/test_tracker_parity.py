"""The streaming tracker against Meta's video predictor (sam2==1.1.0), frame by frame.

Two objects are prompted on frame 0, one by a mask and one by a click; on frame 10 a
click corrects the second one (in clips that long). Meta's side: propagate to frame 10, add the click there
(with `add_all_frames_to_correct_as_cond`, so the corrected frame conditions later frames
as it does in our tracker), then propagate from frame 10.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vos
from tests.video_reference import (
    NUM_FRAMES,
    assert_frame_matches,
    centroid_click,
    ground_truth,
    meta_frame,
    meta_video_predictor,
    write_clip,
)

CORRECTION_FRAME = 10
SHORT_CLIP = 12  # frames of the CI runs that need fewer than NUM_FRAMES: 2 after the correction
NO_CORRECTION_CLIP = 8  # frames of the CI runs without the correction: the memory bank (1 + 6) is full on the last


def run_tracker(model, frames, mask, click, correction, **options):
    tracker = vos.Tracker(model, fill_hole_area=0, **options)
    tracker.add_prompt(1, mask=mask)
    tracker.add_prompt(2, points=click, labels=[1])
    for f, frame in enumerate(frames):
        if f == CORRECTION_FRAME:
            tracker.add_prompt(2, points=correction, labels=[1, 0])
        yield tracker.step(frame)


def meta_reference(checkpoint, folder, size, mask, click, correction, device="cpu", **predictor):
    """Per frame: Meta's (N, 1, H, W) video-res logits and the object scores it held right then."""
    meta = meta_video_predictor(checkpoint, size, device, **predictor)
    meta.add_all_frames_to_correct_as_cond = True
    state = meta.init_state(video_path=str(folder))
    meta.add_new_mask(state, frame_idx=0, obj_id=1, mask=mask)
    meta.add_new_points_or_box(state, frame_idx=0, obj_id=2, points=click, labels=np.array([1], np.int32))
    ref = {f: meta_frame(state, f, m.cpu()) for f, _, m in meta.propagate_in_video(state, max_frame_num_to_track=CORRECTION_FRAME)}
    if state["num_frames"] <= CORRECTION_FRAME:  # a clip too short for the correction
        return ref
    meta.add_new_points_or_box(
        state, frame_idx=CORRECTION_FRAME, obj_id=2, points=correction, labels=np.array([1, 0], np.int32)
    )
    ref.update({f: meta_frame(state, f, m.cpu()) for f, _, m in meta.propagate_in_video(state, start_frame_idx=CORRECTION_FRAME)})
    return ref


@pytest.mark.parametrize(
    "size,present",
    [pytest.param(512, True, marks=pytest.mark.slow), (512, False), pytest.param(1024, True, marks=pytest.mark.slow)],
    ids=["512-present", "512-absent", "1024-present"],
)
@torch.inference_mode()
def test_tracker_matches_video_predictor(davis_root, tiny_checkpoint, tracking_checkpoint, tmp_path, size, present):
    checkpoint = tracking_checkpoint if present else tiny_checkpoint
    frames = write_clip(davis_root, "car-shadow", size, tmp_path, n=NUM_FRAMES if present else NO_CORRECTION_CLIP)
    gt = ground_truth(davis_root, "car-shadow", 0, size)
    click = np.array([[size * 0.2, size * 0.8]], dtype=np.float32)
    correction = np.concatenate([centroid_click(ground_truth(davis_root, "car-shadow", CORRECTION_FRAME, size)), click])
    ref = meta_reference(checkpoint, tmp_path, size, gt, click, correction)
    assert sorted(ref) == list(range(len(frames)))

    model = vos.load_model("sam2.1_hiera_t", checkpoint=checkpoint, image_size=size)
    results = list(run_tracker(model, frames, gt, click, correction))
    for f, result in enumerate(results):
        assert_frame_matches(result, ref[f], (1, 2), f)

    tracked = results[1:CORRECTION_FRAME] + results[CORRECTION_FRAME + 1 :]
    if not present:
        # Random weights judge tracked frames object-free: the no-object path (pointer, memory embedding).
        assert all(r.scores[o] < 0 and r.logits[o].max() < -100 for r in tracked for o in (1, 2))
        return
    # The comparison is not vacuous: the logits are real (not the constant of an absent object) ...
    assert all(np.ptp(r.logits[o]) > 0.5 and r.scores[o] > 0 for r in tracked for o in (1, 2))
    # ... the correction changed the mask ...
    assert (results[CORRECTION_FRAME].masks[2] != results[CORRECTION_FRAME - 1].masks[2]).any()
    # ... and they depend on the memory path: a tracker with a wrong memory-attention weight fails.
    model.memory_attention.norm.weight.mul_(1.5)
    wrong = max(np.abs(r.logits[1] - ref[f][0][0]).max() for f, r in enumerate(run_tracker(model, frames[:4], gt, click, correction)))
    assert wrong > 1e-3


def native_clip(
    davis_root, sequence: str, folder, size_wh: tuple[int, int] | None = None, n: int = NUM_FRAMES
) -> list[np.ndarray]:
    """The first `n` frames as JPEGs in `folder`: DAVIS's own files (854x480), or resized to `size_wh` (W, H) and
    saved; read back as both sides will read them."""
    import shutil

    from PIL import Image

    frames = []
    for i in range(n):
        src = davis_root / "JPEGImages" / "480p" / sequence / f"{i:05d}.jpg"
        if size_wh is None:
            shutil.copy(src, folder / src.name)
        else:
            Image.open(src).convert("RGB").resize(size_wh, Image.BICUBIC).save(folder / src.name, quality=95)
        frames.append(np.array(Image.open(folder / src.name).convert("RGB")))
    return frames


@pytest.mark.parametrize(
    "size,frame_wh",
    [
        (512, None),
        pytest.param(512, (359, 641), marks=pytest.mark.slow),
        pytest.param(1024, None, marks=pytest.mark.slow),
        pytest.param(512, (641, 359), marks=pytest.mark.slow),
    ],
    ids=["512-854x480", "512-portrait-359x641", "1024-854x480", "512-odd-641x359"],
)
@torch.inference_mode()
def test_tracker_matches_video_predictor_on_native_size_frames(davis_root, tracking_checkpoint, tmp_path, size, frame_wh):
    """Real video is not S x S: both sides resize each frame themselves (Meta: PIL bicubic), prompts are in
    frame pixels (a full-size mask, clicks) and the logits come back at the frame's size."""
    from PIL import Image

    ci = frame_wh is None and size == 512  # CI's case: 2 frames after the correction; the others the longer clip
    frames = native_clip(davis_root, "car-shadow", tmp_path, frame_wh, n=SHORT_CLIP if ci else NUM_FRAMES)
    h, w = frames[0].shape[:2]
    assert (w, h) == (frame_wh or (854, 480))
    annotation = lambda f: np.array(Image.open(davis_root / "Annotations" / "480p" / "car-shadow" / f"{f:05d}.png").resize((w, h), Image.NEAREST)) > 0  # noqa: E731
    gt = annotation(0)
    click = np.array([[w * 0.2, h * 0.8]], dtype=np.float32)
    correction = np.concatenate([centroid_click(annotation(CORRECTION_FRAME)), click])
    ref = meta_reference(tracking_checkpoint, tmp_path, size, gt, click, correction)

    model = vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=size)
    results = list(run_tracker(model, frames, gt, click, correction))
    for f, result in enumerate(results):
        assert result.logits[1].shape == (h, w)
        assert_frame_matches(result, ref[f], (1, 2), f)
    assert all(np.ptp(r.logits[o]) > 0.1 and r.scores[o] > 0 for r in results for o in (1, 2))  # present, not constant
    if ci:  # the comparison is not vacuous
        assert (results[CORRECTION_FRAME].masks[2] != results[CORRECTION_FRAME - 1].masks[2]).any()  # the correction counts
        model.memory_attention.norm.weight.mul_(1.5)  # the memory path counts: a wrong weight fails
        wrong = run_tracker(model, frames[:4], gt, click, correction)
        assert max(np.abs(r.logits[1] - ref[f][0][0]).max() for f, r in enumerate(wrong)) > 1e-3


@torch.inference_mode()
def test_sam2_0_tracker_matches_its_video_predictor(davis_root, tmp_path):
    """SAM 2.0 (sam2_hiera_t) differs from 2.1 in how memories and pointers are encoded: tracked against
    Meta's 2.0 config with its own random weights (objects kept present)."""
    from tests.conftest import META_CONFIGS, OBJECT_SCORE_BIAS_OFFSET, build_meta

    size = 512
    sd = build_meta("sam2_hiera_t").state_dict()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += OBJECT_SCORE_BIAS_OFFSET
    checkpoint = tmp_path / "sam2_hiera_tiny.pt"
    torch.save({"model": sd}, checkpoint)
    clip = tmp_path / "clip"
    clip.mkdir()
    frames = write_clip(davis_root, "car-shadow", size, clip, n=NO_CORRECTION_CLIP)  # corrections: as in 2.1
    gt = ground_truth(davis_root, "car-shadow", 0, size)
    click = np.array([[size * 0.2, size * 0.8]], dtype=np.float32)
    ref = meta_reference(checkpoint, clip, size, gt, click, None, config=META_CONFIGS["sam2_hiera_t"])

    model = vos.load_model(checkpoint=checkpoint, image_size=size)
    assert model.cfg.name == "sam2_hiera_t"
    results = list(run_tracker(model, frames, gt, click, None))
    assert sorted(ref) == list(range(len(frames)))
    for f, result in enumerate(results):
        assert_frame_matches(result, ref[f], (1, 2), f)
    assert all(np.ptp(r.logits[o]) > 0.1 and r.scores[o] > 0 for r in results for o in (1, 2))  # present, not constant
