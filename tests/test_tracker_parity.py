"""The streaming tracker against Meta's video predictor (sam2==1.1.0), frame by frame.

Both get the same S x S JPEG frames (Meta's PIL resize is then an identity), the same
random weights in Meta's format, and two objects prompted on frame 0: one by a mask, one
by a click. Meta normalizes pointer distances by min(num_frames, 16) - 1, so clips have
at least 16 frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vos

LOGIT_TOL = 1e-3
NUM_FRAMES = 16


def write_clip(davis_root, sequence: str, size: int, folder, n: int = NUM_FRAMES) -> list[np.ndarray]:
    frames = []
    for i in range(n):
        src = Image.open(davis_root / "JPEGImages" / "480p" / sequence / f"{i:05d}.jpg").convert("RGB")
        src.resize((size, size), Image.BICUBIC).save(folder / f"{i:05d}.jpg", quality=95)
        frames.append(np.array(Image.open(folder / f"{i:05d}.jpg").convert("RGB")))
    return frames


def run_tracker(model, frames, mask, click):
    tracker = vos.Tracker(model, fill_hole_area=0)
    tracker.add_prompt(1, mask=mask)
    tracker.add_prompt(2, points=click, labels=[1])
    for frame in frames:
        yield tracker.step(frame)


@pytest.mark.parametrize("size", [512, pytest.param(1024, marks=pytest.mark.slow)])
@torch.inference_mode()
def test_tracker_matches_video_predictor(davis_root, tracking_checkpoint, tmp_path, size):
    from sam2.build_sam import build_sam2_video_predictor

    frames = write_clip(davis_root, "car-shadow", size, tmp_path)
    gt = np.array(Image.open(davis_root / "Annotations/480p/car-shadow/00000.png").resize((size, size), Image.NEAREST)) > 0
    ys, xs = np.nonzero(gt)
    click = np.array([[xs.mean(), ys.mean()]], dtype=np.float32)
    other_click = np.array([[size * 0.2, size * 0.8]], dtype=np.float32)

    overrides = [f"++model.image_size={size}"] if size != 1024 else []
    meta = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", tracking_checkpoint, device="cpu", hydra_overrides_extra=overrides
    )
    meta.fill_hole_area = 0
    state = meta.init_state(video_path=str(tmp_path))
    meta.add_new_mask(state, frame_idx=0, obj_id=1, mask=gt)
    meta.add_new_points_or_box(state, frame_idx=0, obj_id=2, points=other_click, labels=np.array([1], np.int32))
    ref = {f: masks[:, 0].numpy() for f, _, masks in meta.propagate_in_video(state)}

    model = vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=size)
    worst = 0.0
    for f, result in enumerate(run_tracker(model, frames, gt, other_click)):
        assert result.frame_index == f
        for k, obj_id in enumerate((1, 2)):
            diff = np.abs(result.logits[obj_id] - ref[f][k]).max()
            worst = max(worst, diff)
            key = "cond_frame_outputs" if f == 0 else "non_cond_frame_outputs"
            meta_score = state["output_dict_per_obj"][k][key][f]["object_score_logits"].item()
            assert abs(result.scores[obj_id] - meta_score) <= LOGIT_TOL, (f, obj_id)
            assert (result.scores[obj_id] > 0) == (meta_score > 0)
    assert worst <= LOGIT_TOL
    # The comparison is not vacuous: the logits are real (not the constant of an absent object) ...
    assert all(np.ptp(result.logits[o]) > 0.5 and result.scores[o] > 0 for o in (1, 2))
    # ... and they depend on the memory path: a tracker with a wrong memory-attention weight fails.
    model.memory_attention.norm.weight.mul_(1.5)
    wrong = max(np.abs(r.logits[1] - ref[f][0]).max() for f, r in enumerate(run_tracker(model, frames[:4], gt, other_click)))
    assert wrong > LOGIT_TOL
