"""Every shipped config loads a random checkpoint written by Meta's code in Meta's format.

Full parity for the larger trunks runs under the `slow` marker (`pytest -m slow`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vos
from tests.conftest import META_CONFIGS, build_meta, read_frame, save_meta_checkpoint
from tests.meta_reference import meta_image_features, meta_predict
from vos.tracking.transforms import preprocess_image

OTHER_MODELS = [n for n in META_CONFIGS if n != "sam2.1_hiera_t"]  # Meta's; EdgeTAM: tests/test_edgetam.py
LARGE = ("sam2.1_hiera_l", "sam2_hiera_l")  # 13 s each to build twice: under -m slow, with their parity


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in OTHER_MODELS])
def test_meta_checkpoint_loads_strictly(name, tmp_path):
    meta = build_meta(name)
    path = save_meta_checkpoint(meta, tmp_path / f"{name}.pt")
    del meta
    model = vos.load_model(name, checkpoint=path)
    ref = torch.load(path, map_location="cpu", weights_only=True)["model"]
    ours = model.state_dict()
    assert ours.keys() == ref.keys()
    for key in ("image_encoder.trunk.pos_embed", "sam_mask_decoder.iou_token.weight", "memory_encoder.out_proj.weight"):
        assert torch.equal(ours[key], ref[key])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l", "sam2_hiera_l"])
@pytest.mark.parametrize("size", [512, 1024])
def test_larger_trunks_match_meta(name, size, davis_root, tmp_path):
    meta = build_meta(name, size).eval()
    path = save_meta_checkpoint(meta, tmp_path / "w.pt")
    model = vos.load_model(name, checkpoint=path, image_size=size)
    image = read_frame(davis_root, "breakdance", 5)
    ref = meta_image_features(meta, preprocess_image(image, size))
    predictor = vos.ImagePredictor(model)
    predictor.set_image(image)
    assert (predictor._features["image_embed"] - ref["image_embed"]).abs().max() <= 1e-4
    kwargs = dict(point_coords=np.array([[400.0, 250.0]]), point_labels=np.array([1]))
    _, ious, low = predictor.predict(**kwargs)
    _, ref_ious, ref_low = meta_predict(meta, ref, image.shape[:2], **kwargs)
    assert np.abs(low - ref_low).max() <= 1e-3 and np.abs(ious - ref_ious).max() <= 1e-3
