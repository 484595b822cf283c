"""EfficientTAM in vos against EfficientTAM's own code (`efficient-track-anything==1.0`), run as an oracle in a
process of its own (tests/oracles/tam_reference.py: random weights, seed 0, layer norms and the position embedding
randomized, the object-score bias shifted so objects stay present; saved in the reference's checkpoint format).

Compared: the image encoder (ViT + ViTDet neck), then the streaming tracker against the reference's video predictor
over a clip: two objects on frame 0 (a mask and a click), correction clicks later, every frame's video-resolution
logits (<= 1e-3). The reference (SAM 2's first release) keeps no object scores; its logits are checked to show the
objects present. CI runs EfficientTAM-Ti at 512 px (`efficienttam_ti_512x512`, and `efficienttam_ti_1` with pooled
memory); EfficientTAM-S at 1024 px and the second pooled variant are `slow`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vos
from tests.tam_oracle import check_engine_features, run_reference, track_against

MODULE_TOL = 1e-4
CI_VARIANT, CI_SIZE = "efficienttam_ti_512x512", 512


@pytest.fixture(scope="module")
def reference(davis_root: Path, tmp_path_factory) -> dict:
    """The oracle's checkpoint and outputs for EfficientTAM-Ti at 512 px, and the clip and prompts it tracked."""
    return run_reference("efficienttam", davis_root, tmp_path_factory.mktemp("efficienttam"), CI_SIZE, CI_VARIANT)


@pytest.fixture(scope="module")
def model(reference: dict):
    return vos.load_model(CI_VARIANT, checkpoint=reference["checkpoint"])


def test_the_checkpoint_picks_its_config_and_others_refuse_it(reference: dict):
    assert vos.load_model(checkpoint=reference["checkpoint"]).cfg.name == CI_VARIANT  # its published file name
    same_tensors = " or ".join(f"efficienttam_ti{v}" for v in ("", "_1", "_2", "_512x512"))
    looks_like = f"this looks like {same_tensors}, not edgetam"
    with pytest.raises(vos.CheckpointError, match=looks_like):
        vos.load_model("edgetam", checkpoint=reference["checkpoint"], image_size=CI_SIZE)


@torch.inference_mode()
def test_image_encoder_equals_the_reference(reference: dict, model):
    ref = reference["outputs"]
    image = torch.from_numpy(ref["image"])
    feats, pos = model.image_encoder(image)
    assert len(feats) == 1 and feats[0].shape == (1, 256, CI_SIZE // 16, CI_SIZE // 16)
    assert torch.allclose(feats[0], torch.from_numpy(ref["fpn_0"]), atol=MODULE_TOL, rtol=0)
    assert torch.allclose(pos[0], torch.from_numpy(ref["pos_0"]), atol=MODULE_TOL, rtol=0)

    # the comparison can fail: the position embedding (interpolated from 14x14) moved a little moves the features
    pos_embed = model.image_encoder.trunk.pos_embed
    saved = pos_embed.clone()
    pos_embed[0, 1 + 14 * 7 + 7] += 0.05
    try:
        moved = model.image_encoder(image)[0][0]
        assert not torch.allclose(moved, torch.from_numpy(ref["fpn_0"]), atol=MODULE_TOL, rtol=0)
    finally:
        pos_embed.copy_(saved)


@torch.inference_mode()
def test_tracker_equals_the_reference_video_predictor(reference: dict, model):
    track_against(reference, model)


def test_engine_features_take_efficienttam(reference: dict, model, tmp_path: Path):
    check_engine_features(model, reference, tmp_path, CI_SIZE)


@pytest.mark.slow
@torch.inference_mode()
def test_efficienttam_s_at_1024_equals_the_reference(davis_root: Path, tmp_path: Path):
    reference = run_reference("efficienttam", davis_root, tmp_path, 1024, "efficienttam_s")
    model = vos.load_model(checkpoint=reference["checkpoint"])
    assert model.cfg.name == "efficienttam_s" and model.cfg.image_size == 1024
    track_against(reference, model)


@pytest.mark.parametrize("variant", [1, pytest.param(2, marks=pytest.mark.slow)])
@torch.inference_mode()
def test_pooled_memory_attention_equals_the_reference(variant: int, davis_root: Path, tmp_path: Path):
    """EfficientTAM's efficient cross-attention (efficienttam_ti_1, _2; here at 512 px): from frame 2 on, two memory
    frames or more are read, pooled 2x2."""
    config = f"efficienttam_ti_{variant}"
    reference = run_reference("efficienttam", davis_root, tmp_path, CI_SIZE, config)
    model = vos.load_model(checkpoint=reference["checkpoint"], image_size=CI_SIZE)
    assert model.cfg.name == config and model.cfg.memory_attention.memory_pool == 2
    pooled = track_against(reference, model)
    # the same weights without pooling differ (by 2e-4 for variant 1, whose bias makes a cell of equal keys attend as
    # its four tokens would, and 2e-3 for variant 2 with random weights): the comparison sees pooling
    unpooled = vos.load_model("efficienttam_ti", checkpoint=reference["checkpoint"], image_size=CI_SIZE)
    assert track_against(reference, unpooled, tol=float("inf")) > 10 * max(pooled, 1e-5)


@torch.inference_mode()
def test_int8_agrees_with_fp32(reference: dict, model):
    """precision="int8": EfficientTAM's linear layers (its whole ViT, memory attention, decoder) as int8 layers;
    per frame and object, Pearson r of the logits >= 0.98; the masks' IoU is printed (here >= 0.9)."""
    int8 = vos.load_model(CI_VARIANT, checkpoint=reference["checkpoint"], precision="int8")
    assert int8.precision == "int8" and sum("quantized" in type(m).__module__ for m in int8.modules()) > 50
    with pytest.raises(vos.ConfigError, match="loaded with precision int8"):
        vos.Tracker(int8, precision="fp32")
    runs = []
    for m in (model, int8):
        tracker = vos.Tracker(m, fill_hole_area=0)
        tracker.add_prompt(1, mask=reference["mask"])
        tracker.add_prompt(2, points=reference["click"], labels=[1])
        runs.append([tracker.step(frame) for frame in reference["frames"][:5]])
    worst_r, worst_iou, moved = 1.0, 1.0, 0.0
    for a, b in zip(*runs):
        for obj in (1, 2):
            r = np.corrcoef(a.logits[obj].ravel(), b.logits[obj].ravel())[0, 1]
            union = np.logical_or(a.masks[obj], b.masks[obj]).sum()
            iou = np.logical_and(a.masks[obj], b.masks[obj]).sum() / union
            worst_r, worst_iou = min(worst_r, r), min(worst_iou, iou)
            moved = max(moved, float(np.abs(a.logits[obj] - b.logits[obj]).max()))
    print(f"int8 vs fp32 over 5 frames, 2 objects: min Pearson r {worst_r:.5f}, min mask IoU {worst_iou:.4f}")
    assert worst_r >= 0.98 and worst_iou >= 0.9
    assert moved > 1e-3  # int8 really ran
