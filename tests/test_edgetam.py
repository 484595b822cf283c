"""EdgeTAM in vos against EdgeTAM's own code (`edgetam-dimos==1.0.1`), run as an oracle in a process of its own.

The reference builds EdgeTAM with random weights (seed 0; batch norms randomized, the object-score bias shifted
so objects stay present: see tests/oracles/tam_reference.py) and saves them in its checkpoint format; vos
loads that file. Compared: the image encoder (RepViT + FPN neck) and the spatial perceiver for two objects, then
the streaming tracker against the reference's video predictor over a clip of DAVIS's 854 x 480 frames at 512 px (and
S x S frames at 1024 px, `slow`): two objects on frame 0 (a mask and a click), correction clicks later, every frame's
video-resolution logits and object scores (<= 1e-3). Two
objects need the reference's perceiver fix (`.view` -> `.reshape`), which the oracle applies.

Both objects are corrected on the same frame (see `tests.tam_oracle.run_reference`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vos
from tests.tam_oracle import check_engine_features, run_reference, track_against

SIZE = 512
MODULE_TOL = 1e-4


@pytest.fixture(scope="module")
def reference(davis_root: Path, tmp_path_factory) -> dict:
    """The oracle's checkpoint and outputs, and the clip and prompts it tracked: DAVIS's 854 x 480 frames as they are
    (EfficientTAM's tests use S x S frames)."""
    return run_reference("edgetam", davis_root, tmp_path_factory.mktemp("edgetam"), SIZE, native=True)


@pytest.fixture(scope="module")
def model(reference: dict):
    """As `vos.load_model` gives it: batch norms and RepViT's branches folded into single convolutions."""
    return vos.load_model("edgetam", checkpoint=reference["checkpoint"], image_size=SIZE)


def test_the_checkpoint_picks_its_config_and_others_refuse_it(reference: dict):
    assert vos.load_model(checkpoint=reference["checkpoint"], image_size=SIZE).cfg.name == "edgetam"
    with pytest.raises(vos.CheckpointError, match="this looks like edgetam, not sam2.1_hiera_t"):
        vos.load_model("sam2.1_hiera_t", checkpoint=reference["checkpoint"], image_size=SIZE)


@torch.inference_mode()
def test_image_encoder_and_perceiver_equal_the_reference(reference: dict, model):
    ref = reference["outputs"]
    backbone = model.forward_image(torch.from_numpy(ref["image"]))
    # The fused model's neck includes the decoder's conv_s0/conv_s1 (loaded from the reference's weights).
    projections = (model.sam_mask_decoder.conv_s0, model.sam_mask_decoder.conv_s1, torch.nn.Identity())
    for i, proj in enumerate(projections):
        expected = proj(torch.from_numpy(ref[f"fpn_{i}"]))
        assert torch.allclose(backbone.features[i], expected, atol=MODULE_TOL, rtol=0), i
        assert torch.allclose(backbone.pos[i], torch.from_numpy(ref[f"pos_{i}"]), atol=MODULE_TOL, rtol=0), i
    maps = torch.from_numpy(ref["perceiver_in"])
    assert maps.shape[0] == 2  # two objects: the reference needs its `.reshape` fix for this
    latents, latents_pos = model.spatial_perceiver(maps, model.memory_encoder.position_encoding(maps[:1]))
    assert torch.allclose(latents, torch.from_numpy(ref["perceiver_out"]), atol=MODULE_TOL, rtol=0)
    expected_pos = torch.from_numpy(ref["perceiver_pos"])
    assert torch.allclose(latents_pos.expand_as(latents), expected_pos, atol=MODULE_TOL, rtol=0)

    # the comparison can fail: one RepViT weight changed moves the features
    weight = model.image_encoder.trunk.body.stages_2.blocks[3].channel_mixer.conv1.weight
    saved = weight.clone()
    weight[0, 0] += 0.05
    try:
        moved = model.image_encoder(torch.from_numpy(ref["image"]))[0][-1]
        assert not torch.allclose(moved, torch.from_numpy(ref["fpn_2"]), atol=MODULE_TOL, rtol=0)
    finally:
        weight.copy_(saved)


@torch.inference_mode()
def test_tracker_equals_the_reference_video_predictor(reference: dict, model):
    track_against(reference, model)


@torch.inference_mode()
def test_fusing_folds_every_batch_norm_and_changes_nothing(reference: dict, model):
    unfused = vos.load_model("edgetam", checkpoint=reference["checkpoint"], image_size=SIZE, fuse=False)
    norms = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # noqa: E731
    convs = lambda m: sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())  # noqa: E731
    assert norms(unfused) > 0 and norms(model) == 0 and convs(model) < convs(unfused)
    assert model.image_encoder.neck.projected == {0, 1} and not unfused.image_encoder.neck.projected
    image = torch.from_numpy(reference["outputs"]["image"])
    for fused_level, level in zip(model.forward_image(image).features, unfused.forward_image(image).features):
        assert fused_level.shape == level.shape
        assert torch.allclose(fused_level, level, atol=MODULE_TOL, rtol=0)



def test_engine_features_take_edgetam(reference: dict, model, tmp_path: Path):
    check_engine_features(model, reference, tmp_path, SIZE)


@pytest.mark.slow
@torch.inference_mode()
def test_edgetam_at_1024_equals_the_reference(davis_root: Path, tmp_path: Path):
    reference = run_reference("edgetam", davis_root, tmp_path, 1024)
    model = vos.load_model(checkpoint=reference["checkpoint"])
    assert model.cfg.name == "edgetam" and model.cfg.image_size == 1024
    track_against(reference, model)
