"""The everything mode (`vos.MaskGenerator`) against Meta's SAM2AutomaticMaskGenerator (sam2 1.1.0).

Random weights (the tiny SAM 2.1 test model) with the IoU-prediction head's output bias raised, so that masks
pass the predicted-IoU threshold (as the tracker tests raise the object-score bias), on a held DAVIS frame (854x480:
both sides resize it, and each crop, themselves). Same masks (IoU >= 0.99 each, same count and order) and scores.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vos
from tests.conftest import build_meta, read_frame
from tests.meta_generator import meta_generator
from vos.segment import MaskGenerator
from vos.segment.amg import (
    crop_boxes,
    mask_to_rle,
    masks_to_boxes,
    near_crop_edge,
    nms,
    point_grid,
    rle_to_mask,
    uncrop_masks,
)

IOU_HEAD_BIAS = "sam_mask_decoder.iou_prediction_head.layers.2.bias"
IOU_BIAS_OFFSET = 3.0
SCORE_TOL = 1e-3
MASK_IOU = 0.99
# 64 clicks. Random weights' logits are near 0 and their masks ragged, each box about the whole image: a small
# stability offset, and box NMS off within a crop, keep about a hundred masks to compare.
FAST = {"points_per_side": 8, "stability_score_offset": 0.02, "stability_score_thresh": 0.35, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module", params=[512, pytest.param(1024, marks=pytest.mark.slow)], ids=["512px", "1024px"])
def models(request, tiny_checkpoint, tmp_path_factory):
    size = request.param
    sd = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["model"]
    sd[IOU_HEAD_BIAS] += IOU_BIAS_OFFSET
    path = tmp_path_factory.mktemp("segment") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd}, path)
    meta = build_meta("sam2.1_hiera_t", size, seed=None)
    meta.load_state_dict(sd)
    return meta.eval(), vos.load_model("sam2.1_hiera_t", checkpoint=path, image_size=size)


@pytest.fixture(scope="module")
def meta_records(models, davis_root):
    """Meta's generator's records on the held frame, per settings (computed once each)."""
    cache: dict[str, list[dict]] = {}

    def records(**settings) -> list[dict]:
        key = repr(sorted(settings.items()))
        if key not in cache:
            with torch.inference_mode():
                cache[key] = meta_generator(models[0], **settings).generate(read_frame(davis_root, "dog", 10))
        return cache[key]

    return records


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def assert_same_records(ours: list[dict], ref: list[dict]) -> None:
    assert len(ours) == len(ref) >= 20, (len(ours), len(ref))
    for i, (o, r) in enumerate(zip(ours, ref)):
        assert mask_iou(o["segmentation"], r["segmentation"]) >= MASK_IOU, i
        assert abs(o["predicted_iou"] - r["predicted_iou"]) <= SCORE_TOL, i
        assert abs(o["stability_score"] - r["stability_score"]) <= SCORE_TOL, i
        assert np.allclose(o["point_coords"], r["point_coords"]) and o["crop_box"] == r["crop_box"], i
        assert np.allclose(o["bbox"], r["bbox"], atol=2) and abs(o["area"] - r["area"]) <= 0.01 * r["area"] + 2, i


@pytest.mark.parametrize(
    "settings",
    [{}, {"crop_n_layers": 1, "crop_nms_thresh": 1.0}, {"use_m2m": True}],
    ids=["grid", "crops", "m2m"],
)
@torch.inference_mode()
def test_masks_equal_metas_generator(models, meta_records, davis_root, settings):
    _, ours = models
    image = read_frame(davis_root, "dog", 10)
    options = {**FAST, **settings}
    ref = meta_records(**options)
    generator = MaskGenerator(ours, **options)
    encoded = []
    set_image = generator.predictor.set_image
    generator.predictor.set_image = lambda crop: (encoded.append(crop.shape[:2]), set_image(crop))
    got = generator.generate(image)
    assert_same_records(got, ref)
    assert len(encoded) == (5 if settings.get("crop_n_layers") else 1)  # one encoder pass per crop
    # (random weights' masks are ragged and reach every crop's edge, so the kept ones come from the whole image)


@torch.inference_mode()
def test_the_comparison_can_fail(models, meta_records, davis_root):
    """The IoU head's bias changed in vos's model: the record comparison notices."""
    _, ours = models
    image = read_frame(davis_root, "dog", 10)
    ref = meta_records(**FAST)
    bias = ours.sam_mask_decoder.iou_prediction_head.layers[2].bias
    bias += 0.05
    try:
        got = MaskGenerator(ours, **FAST).generate(image)
    finally:
        bias -= 0.05
    with pytest.raises(AssertionError):
        assert_same_records(got, ref)


def test_output_modes_hold_the_same_mask(models, davis_root):
    _, ours = models
    image = read_frame(davis_root, "dog", 10)[:120, :200]
    from pycocotools import mask as mask_utils

    binary = MaskGenerator(ours, **FAST).generate(image)
    coco = MaskGenerator(ours, **FAST, output_mode="coco_rle").generate(image)
    rle = MaskGenerator(ours, **FAST, output_mode="uncompressed_rle").generate(image)
    assert len(binary) == len(coco) == len(rle) > 0
    for b, c, r in zip(binary, coco, rle):
        decoded = mask_utils.decode({"size": c["segmentation"]["size"], "counts": c["segmentation"]["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), b["segmentation"])
        assert np.array_equal(rle_to_mask(r["segmentation"]), b["segmentation"])
        assert b["area"] == int(b["segmentation"].sum())


def test_geometry_helpers():
    grid = point_grid(4)
    assert grid.shape == (16, 2) and np.allclose(grid[:4, 1], 0.125)
    assert np.allclose(grid[:4, 0], [0.125, 0.375, 0.625, 0.875])
    boxes, layers = crop_boxes((480, 854), 1, 512 / 1500)
    assert boxes[0] == [0, 0, 854, 480] and layers == [0, 1, 1, 1, 1]
    assert all(b[2] <= 854 and b[3] <= 480 for b in boxes) and boxes[1][:2] == [0, 0] and boxes[-1][2:] == [854, 480]
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 0, 0] = True
    assert masks_to_boxes(masks).tolist() == [[3, 2, 8, 4], [0, 0, 0, 0], [0, 0, 0, 0]]
    for m, r in zip(masks, mask_to_rle(masks)):
        assert np.array_equal(rle_to_mask(r), m.numpy())
    near = near_crop_edge(torch.tensor([[0, 0, 50, 50], [100, 100, 150, 150]]), [400, 0, 854, 250], [0, 0, 854, 480])
    assert near.tolist() == [True, False]  # the first touches the crop's left edge (x = 400), inside the image
    assert uncrop_masks(torch.ones(1, 2, 3, dtype=torch.bool), [4, 5, 7, 7], (10, 12)).nonzero()[:, 1:].tolist() == [
        [5, 4], [5, 5], [5, 6], [6, 4], [6, 5], [6, 6]]  # fmt: skip
    keep = nms(torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]), torch.tensor([0.5, 0.9, 0.7]), 0.7)
    assert keep.tolist() == [1, 2]  # box 0 overlaps box 1 (IoU 0.81) and scores lower


def test_bad_settings_are_refused(models):
    _, ours = models
    with pytest.raises(ValueError, match="points_per_side"):
        MaskGenerator(ours, points_per_side=0)
    with pytest.raises(ValueError, match="one per crop layer"):
        MaskGenerator(ours, point_grids=[point_grid(4)], crop_n_layers=1)
