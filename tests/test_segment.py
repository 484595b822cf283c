"""The everything mode (`vos.MaskGenerator`) against Meta's SAM2AutomaticMaskGenerator (sam2 1.1.0).

Random weights (the tiny SAM 2.1 test model) with the IoU-prediction head's output bias raised, so that masks
pass the predicted-IoU threshold (as the tracker tests raise the object-score bias), on a held DAVIS frame (854x480:
both sides resize it, and each crop, themselves). Same masks (IoU >= 0.99 each, same count and order) and scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vos
from tests.conftest import build_meta, read_frame
from tests.meta_generator import meta_generator
from vos.segment import MaskGenerator, upscaled
from vos.segment.amg import (
    box_area,
    crop_boxes,
    mask_to_rle,
    masks_to_boxes,
    near_crop_edge,
    nms,
    point_grid,
    rle_to_mask,
    stability_score,
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
def models(request, segment_checkpoint):
    size = request.param
    meta = build_meta("sam2.1_hiera_t", size, seed=None)
    meta.load_state_dict(torch.load(segment_checkpoint, map_location="cpu", weights_only=True)["model"])
    return meta.eval(), vos.load_model("sam2.1_hiera_t", checkpoint=segment_checkpoint, image_size=size)


@pytest.fixture(scope="module")
def segment_checkpoint(tiny_checkpoint, tmp_path_factory):
    """The tiny test weights with the IoU head's bias raised: masks pass the predicted-IoU threshold."""
    sd = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["model"]
    sd[IOU_HEAD_BIAS] += IOU_BIAS_OFFSET
    path = tmp_path_factory.mktemp("segment") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd}, path)
    return path


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


def test_nms_keeps_what_the_all_pairs_rule_keeps():
    """Greedy NMS (kept boxes against the boxes still in the race) equals the rule on the full IoU matrix: sorted
    by score (ties: lower index first), a box goes when a kept better one overlaps it above the threshold. Integer
    boxes as masks give, with tied scores and empty (zero-area) boxes."""
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 60, (300, 2, 2))
    boxes = torch.from_numpy(np.concatenate([corners.min(1), corners.max(1)], 1))
    boxes[:20, 2:] = boxes[:20, :2]  # empty
    scores = torch.from_numpy(rng.integers(0, 30, 300).astype(np.float32))  # many ties
    for threshold in (0.3, 0.7):
        order = torch.sort(scores, descending=True, stable=True).indices
        b = boxes[order].float()
        inter = (torch.minimum(b[:, None, 2:], b[None, :, 2:]) - torch.maximum(b[:, None, :2], b[None, :, :2]))
        inter = inter.clamp(min=0).prod(-1)
        area = box_area(b)
        over = (inter / (area[:, None] + area[None, :] - inter) > threshold).numpy()
        alive = np.ones(len(b), dtype=bool)
        for i in range(len(b)):
            if alive[i]:
                alive[i + 1 :] &= ~over[i, i + 1 :]
        want = order[torch.from_numpy(alive)]
        assert 20 < len(want) < 280
        assert nms(boxes, scores, threshold).tolist() == want.tolist()


@pytest.mark.parametrize("low_hw, hw", [((128, 128), (480, 854)), ((128, 128), (77, 100)), ((32, 48), (32, 48))])
def test_mask_stats_equal_those_of_torchs_upscaled_masks(low_hw, hw, monkeypatch):
    """Stability scores and boxes counted without upscaling (`mask_stats`) equal those of torch's upscaled logits,
    bit for bit: noisy logits of four magnitudes, empty and full masks, logits on a threshold, up- and downscaling
    and the same size; no mask is upscaled by torch for it."""
    assert upscaled.same_as_torch(), "the numba upscaling no longer rounds as torch's kernel: mask_stats is slow"
    gen = torch.Generator().manual_seed(0)
    low = torch.randn(12, *low_hw, generator=gen) * torch.tensor([0.05, 0.5, 2.0, 10.0]).repeat(3)[:, None, None]
    low[0], low[1], low[2] = -5.0, 5.0, 1.0  # empty, full, on the threshold + offset
    interpolate = torch.nn.functional.interpolate
    recounted = []
    monkeypatch.setattr(torch.nn.functional, "interpolate", lambda x, **kw: recounted.append(len(x)) or interpolate(x, **kw))
    for offset in (1.0, 0.02):
        stability, boxes = upscaled.mask_stats(low, hw, 0.0, offset)
        masks = interpolate(low[:, None], size=hw, mode="bilinear", align_corners=False)[:, 0]
        assert torch.equal(stability.nan_to_num(-1), stability_score(masks, 0.0, offset).nan_to_num(-1))
        assert torch.equal(boxes, masks_to_boxes(masks > 0))
    assert boxes[0].tolist() == [0, 0, 0, 0] and boxes[1].tolist() == [0, 0, hw[1] - 1, hw[0] - 1]
    assert not recounted


def test_bad_settings_are_refused(models):
    _, ours = models
    with pytest.raises(vos.ConfigError, match="points_per_side: Input should be greater than or equal to 1"):
        MaskGenerator(ours, points_per_side=0)
    with pytest.raises(ValueError, match="one per crop layer"):
        MaskGenerator(ours, point_grids=[point_grid(4)], crop_n_layers=1)


def disc_scene(h: int = 240, w: int = 320):
    """Discs (cx, cy, r) of a synthetic scene, and a decoder for it: a click inside a disc gets that disc, its logit
    10 at the centre falling to 1.5 at the rim (-10 outside; predicted IoU 0.95); elsewhere an empty, low-IoU mask.
    Its "low-res" logits are at the image's size: the predictor's `upscale` is made the identity with it."""
    discs = [(80, 80, 50), (230, 150, 60), (140, 210, 14), (290, 30, 10)]  # the sparse grid misses the small two
    yy, xx = np.mgrid[:h, :w]

    def decode_clicks(coords, labels, mask_input, multimask):
        k = 3 if multimask else 1
        masks, ious = torch.full((len(coords), k, h, w), -10.0), torch.full((len(coords), k), 0.1)
        for i, (x, y) in enumerate(coords[:, 0].tolist()):
            for cx, cy, r in discs:
                if (x - cx) ** 2 + (y - cy) ** 2 < r**2:
                    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / r
                    masks[i, 0] = torch.from_numpy(np.where(dist < 1, 10 - 8.5 * dist, -10.0)).float()
                    ious[i, 0] = 0.95
        return masks, ious

    return np.zeros((h, w, 3), np.uint8), discs, decode_clicks


def stub_decoder(generator: MaskGenerator, decode_clicks) -> None:
    generator.predictor.set_image = lambda image: None
    generator.predictor.decode_clicks = decode_clicks
    generator.predictor.upscale = lambda low_res: low_res


def test_hierarchical_mode_finds_the_full_modes_objects_with_fewer_clicks(models):
    """TinySAM's two passes on a scene whose decoder is known: the sparse grid (8 x 8 of 32 x 32) finds the large
    discs; the dense grid runs only outside their confident cores (the rims are clicked again, their duplicates
    removed by NMS) and finds the small discs the sparse grid missed."""
    image, discs, decode_clicks = disc_scene()
    found = {}
    for hierarchical in (False, True):
        generator = MaskGenerator(models[1], hierarchical=hierarchical)
        stub_decoder(generator, decode_clicks)
        found[hierarchical] = (generator.generate(image), generator.points_decoded)
    expected = sorted((cx - r + 1, cy - r + 1, 2 * r - 2, 2 * r - 2) for cx, cy, r in discs)  # XYWH, inclusive max
    for records, _ in found.values():
        assert sorted(tuple(round(v) for v in r["bbox"]) for r in records) == expected  # each disc once
    (full, full_decoded), (ours, decoded) = found[False], found[True]
    assert full_decoded == 32 * 32
    dense = (point_grid(32) * [320, 240]).astype(int)
    in_core = [any((x - cx) ** 2 + (y - cy) ** 2 < (1.5 / 8.5 * r) ** 2 for cx, cy, r in discs[:2]) for x, y in dense]
    assert decoded == 8 * 8 + 32 * 32 - sum(in_core) and sum(in_core) >= 4  # logit > 8.5: the cores of the two large
    for r in full:  # the same masks as the full mode's, not only the same boxes
        assert any(np.array_equal(r["segmentation"], o["segmentation"]) for o in ours)


def test_a_large_points_per_batch_is_split_to_bound_memory(models, monkeypatch):
    """A batch of clicks whose logits would pass MASK_BATCH_BYTES at the image's size goes through in smaller
    batches (4096 clicks of 3 masks at 854x480 would take 20 GB): the same records."""
    from vos.segment import generator as module

    image, _, decode_clicks = disc_scene()
    sizes = []

    def counted(coords, *args):
        sizes.append(len(coords))
        return decode_clicks(coords, *args)

    found = []
    for budget in (module.MASK_BATCH_BYTES, 10 * 3 * 240 * 320 * 4):  # the default; then 10 clicks' logits
        monkeypatch.setattr(module, "MASK_BATCH_BYTES", budget)
        generator = MaskGenerator(models[1], points_per_side=16, points_per_batch=4096)
        stub_decoder(generator, counted)
        found.append(generator.generate(image))
    assert sizes[0] == 256 and max(sizes[1:]) == 10 and sum(sizes[1:]) == 256
    assert len(found[0]) == 4 and [r["bbox"] for r in found[0]] == [r["bbox"] for r in found[1]]
    assert all(np.array_equal(a["segmentation"], b["segmentation"]) for a, b in zip(*found, strict=True))


def test_hierarchical_mode_refuses_point_grids(models):
    with pytest.raises(ValueError, match="hierarchical"):
        MaskGenerator(models[1], hierarchical=True, point_grids=[point_grid(4)])


def test_segment_command_writes_what_the_api_returns(segment_checkpoint, davis_root, tmp_path, capsys):
    """`vos segment` on an image, a folder (with an unreadable file: skipped, exit code 1) and a video: the JSON's
    COCO RLEs decode to the API's masks, the label map holds the smallest mask per pixel; then prompts."""
    import json

    from PIL import Image
    from pycocotools import mask as mask_utils

    from tests.video_reference import write_video
    from vos.cli import main
    from vos.streams.label_map import read_label_map

    frames = [read_frame(davis_root, "dog", i)[:240, :320] for i in (10, 2)]
    Image.fromarray(frames[0]).save(tmp_path / "one.png")
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i}.png")
    (folder / "2.png").write_bytes(b"not a png")
    write_video(tmp_path / "clip.mp4", frames)
    fast = {**FAST, "points_per_side": 4}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in fast.items()]
    model = ["--checkpoint", str(segment_checkpoint), "--config", "sam2.1_hiera_t", "--image-size", "512", "--quiet"]
    out = tmp_path / "out"
    inputs = [str(tmp_path / "one.png"), str(folder), str(tmp_path / "clip.mp4")]
    assert main(["segment", *inputs, "--out", str(out), "--render", *flags, *model]) == 1
    assert "2.png" in capsys.readouterr().err
    for name in ("one", "shots/0", "shots/1", "clip/00000", "clip/00001"):
        expected = {f"{Path(name).name}{suffix}" for suffix in (".json", ".png", "-overlay.png")}
        assert {p.name for p in out.glob(f"{name}*")} == expected
    file_names = {n: json.loads((out / f"{n}.json").read_text())["image"]["file_name"] for n in ("one", "shots/0", "clip/00001")}
    assert file_names == {"one": "one.png", "shots/0": "0.png", "clip/00001": "clip/00001"}  # SA-1B keeps the extension

    generator = MaskGenerator(vos.load_model("sam2.1_hiera_t", checkpoint=segment_checkpoint, image_size=512), **fast)

    def assert_written(name: str, records: list[dict]) -> list[dict]:
        annotations = json.loads((out / f"{name}.json").read_text())["annotations"]
        assert len(annotations) == len(records) > 0
        labels = read_label_map(out / f"{name}.png")
        rles = [a["segmentation"] for a in annotations]
        masks = [mask_utils.decode({**rle, "counts": rle["counts"].encode()}) for rle in rles]
        for a, mask, record in zip(annotations, masks, records):
            assert np.array_equal(mask.astype(bool), record["segmentation"])
            assert a["predicted_iou"] == record["predicted_iou"] and a["bbox"] == record["bbox"]
            assert mask[labels == a["id"]].all()  # a pixel's id names a mask on it ...
        areas = {a["id"]: a["area"] for a in annotations}
        for a, mask in zip(annotations, masks):  # ... the smallest one
            assert all(areas[i] <= a["area"] for i in np.unique(labels[mask.astype(bool)]))
        assert (labels == 0).sum() == (~np.any(masks, axis=0)).sum()
        return annotations

    assert_written("one", generator.generate(frames[0]))
    assert main(["segment", inputs[0], "--out", str(out), "--point", "100,80", "--box", "10,10,200,150", *model]) == 0
    prompted = assert_written("one", generator.prompted(frames[0], [(100, 80)], [(10, 10, 200, 150)]))
    assert prompted[0]["point_coords"] == [[100, 80]] and prompted[1]["box"] == [10, 10, 200, 150]
    assert main(["segment", inputs[0], "--out", str(out), "--box", "1,2,3", *model]) == 2
    assert "--box takes 4 numbers" in capsys.readouterr().err
    assert main(["segment", inputs[0], "--out", str(out), "--point", "400,10", *model]) == 2
    assert "inside the 320x240 image" in capsys.readouterr().err
    assert main(["segment", inputs[0], "--out", str(tmp_path), *model]) == 2  # out/one.png is the input
    assert "would overwrite the input" in capsys.readouterr().err
    assert (tmp_path / "one.png").read_bytes() == (folder / "0.png").read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(frames[1]).save(other / "0.png")
    collide = tmp_path / "collide"
    assert main(["segment", str(folder / "0.png"), str(other / "0.png"), "--out", str(collide), *model]) == 2
    assert f"{folder / '0.png'} and {other / '0.png'} would both write {collide / '0'}.json" in capsys.readouterr().err
    assert not collide.exists()  # refused before any work
    onnx = ["--backend", "onnxruntime", "--onnx-dir", str(tmp_path)]  # no export there
    assert main(["segment", inputs[0], "--out", str(collide), *onnx, *model]) == 2
    assert "vos export onnx" in capsys.readouterr().err and not collide.exists()
