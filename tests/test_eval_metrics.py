"""Per-frame J and F: known answers, and equality with a direct transcription of the DAVIS toolkit."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import (
    davis_reference as ref,  # the toolkit's per-frame J and F, written out with numpy
)
from tests.data_paths import require_davis
from vos.evaluation import EvaluationError
from vos.evaluation.metrics import (
    binary_lut,
    boundary_f,
    boundary_radius,
    disk_half_widths,
    jaccard,
    read_mask,
    score_frame,
)

DAVIS_SIZE = (480, 854)
DAVIS_RADIUS = 8


# --- known answers --------------------------------------------------------------------------------


def square(top: int, left: int, size: int, shape=DAVIS_SIZE) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_radius_is_the_toolkits_ceil_of_the_diagonal_fraction():
    assert boundary_radius(*DAVIS_SIZE) == DAVIS_RADIUS
    assert boundary_radius(1080, 1920) == math.ceil(0.008 * math.hypot(1080, 1920)) == 18
    widths = disk_half_widths(DAVIS_RADIUS)
    yy, xx = np.mgrid[-DAVIS_RADIUS : DAVIS_RADIUS + 1, -DAVIS_RADIUS : DAVIS_RADIUS + 1]
    disk = xx**2 + yy**2 <= DAVIS_RADIUS**2
    assert [int(disk[DAVIS_RADIUS + d].sum()) for d in range(DAVIS_RADIUS + 1)] == [2 * w + 1 for w in widths]


def test_identical_masks_score_one():
    mask = square(100, 200, 80)
    assert jaccard(mask, mask) == 1.0
    assert boundary_f(mask, mask) == 1.0


def test_disjoint_masks_score_zero():
    gt, pred = square(50, 50, 40), square(300, 600, 40)
    assert jaccard(gt, pred) == 0.0
    assert boundary_f(gt, pred) == 0.0


def test_empty_against_empty_scores_one():
    empty = np.zeros(DAVIS_SIZE, dtype=bool)
    assert jaccard(empty, empty) == 1.0
    assert boundary_f(empty, empty) == 1.0


@pytest.mark.parametrize("gt_empty", [True, False])
def test_one_empty_mask_scores_zero(gt_empty: bool):
    empty, mask = np.zeros(DAVIS_SIZE, dtype=bool), square(10, 10, 30)
    gt, pred = (empty, mask) if gt_empty else (mask, empty)
    assert jaccard(gt, pred) == 0.0
    assert boundary_f(gt, pred) == 0.0


def test_shift_within_the_tolerance_keeps_f_at_one():
    gt = square(100, 100, 120)
    within = square(100 + DAVIS_RADIUS // 2, 100 + DAVIS_RADIUS // 2, 120)
    beyond = square(100 + 3 * DAVIS_RADIUS, 100, 120)
    assert boundary_f(gt, within) == 1.0
    assert jaccard(gt, within) < 1.0
    assert 0.0 < boundary_f(gt, beyond) < 1.0
    assert boundary_f(gt, beyond) == ref.f_measure(beyond, gt)


def test_full_frame_mask_has_no_boundary_as_in_the_toolkit():
    full = np.ones((40, 60), dtype=bool)
    assert boundary_f(full, full) == 1.0
    assert boundary_f(full, square(5, 5, 10, (40, 60))) == 0.0


def test_objects_are_scored_separately_and_absent_ones_score_one():
    gt = np.zeros(DAVIS_SIZE, dtype=np.uint8)
    pred = np.zeros_like(gt)
    gt[square(50, 50, 60)] = 1
    pred[square(55, 50, 60)] = 1
    gt[square(200, 400, 50)] = 2
    scores = score_frame(gt, pred, 3)
    assert scores.j.tolist() == [55 * 60 / (65 * 60), 0.0, 1.0]
    assert scores.f.tolist() == [1.0, 0.0, 1.0]
    assert scores.gt_area.tolist() == [3600, 2500, 0]
    assert np.flatnonzero(scores.pred_values).tolist() == [0, 1]


# --- equality with the toolkit's algorithm ---------------------------------------------------------


def blobs(rng: np.random.Generator, shape: tuple[int, int], n_objects: int) -> np.ndarray:
    """Label map of random rectangles and speckle, touching the borders often."""
    labels = np.zeros(shape, dtype=np.uint8)
    h, w = shape
    for k in range(1, n_objects + 1):
        for _ in range(int(rng.integers(1, 4))):
            y0, x0 = int(rng.integers(-3, h)), int(rng.integers(-3, w))
            labels[max(y0, 0) : y0 + int(rng.integers(1, h)), max(x0, 0) : x0 + int(rng.integers(1, w))] = k
    noise = rng.random(shape) < 0.03
    labels[noise] = rng.integers(0, n_objects + 1, int(noise.sum()))
    return labels


@pytest.mark.parametrize("seed", range(16))
def test_random_label_maps_equal_the_toolkit(seed: int):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 90)), int(rng.integers(1, 130)))
    n_objects = int(rng.integers(1, 4))
    gt, pred = blobs(rng, shape, n_objects), blobs(rng, shape, n_objects)
    scores = score_frame(gt, pred, n_objects)
    for k in range(1, n_objects + 1):
        assert scores.j[k - 1] == ref.iou(gt == k, pred == k)
        assert scores.f[k - 1] == ref.f_measure(pred == k, gt == k)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (2, 2), (3, 64), (5, 65), (4, 128)])
def test_thin_frames_and_chunk_edges_equal_the_toolkit(shape: tuple[int, int]):
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        gt, pred = rng.integers(0, 3, shape).astype(np.uint8), rng.integers(0, 3, shape).astype(np.uint8)
        scores = score_frame(gt, pred, 2)
        for k in (1, 2):
            assert scores.j[k - 1] == ref.iou(gt == k, pred == k)
            assert scores.f[k - 1] == ref.f_measure(pred == k, gt == k)


def test_real_frames_equal_the_toolkit():
    root = require_davis("Annotations/480p", "results/osvos")
    for seq, frame in [("dog", "00030"), ("libby", "00017"), ("breakdance", "00060")]:
        gt = read_mask(root / "Annotations/480p" / seq / f"{frame}.png") == 255
        pred = read_mask(root / "results/osvos" / seq / f"{frame}.png") == 1
        assert jaccard(gt, pred) == ref.iou(gt, pred)
        assert boundary_f(gt, pred) == ref.f_measure(pred, gt)


def test_luts_map_raw_values_to_objects():
    gt = np.where(square(10, 10, 20, (64, 64)), 255, 0).astype(np.uint8)
    pred = square(10, 10, 20, (64, 64)).astype(np.uint8)
    scores = score_frame(gt, pred, 1, gt_lut=binary_lut([255]))
    assert (scores.j[0], scores.f[0]) == (1.0, 1.0)
    assert np.flatnonzero(scores.gt_values).tolist() == [0, 255]


# --- reading masks ---------------------------------------------------------------------------------


def test_read_mask_accepts_palette_grey_and_1bit(tmp_path: Path):
    labels = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    palette = Image.fromarray(labels, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])
    palette.save(tmp_path / "p.png")
    Image.fromarray(labels).save(tmp_path / "l.png")
    Image.fromarray(labels > 0).save(tmp_path / "b.png")
    assert read_mask(tmp_path / "p.png").tolist() == labels.tolist()
    assert read_mask(tmp_path / "l.png").tolist() == labels.tolist()
    assert read_mask(tmp_path / "b.png").tolist() == (labels > 0).astype(np.uint8).tolist()


def test_read_mask_rejects_colour_images_and_missing_files(tmp_path: Path):
    Image.new("RGB", (4, 4)).save(tmp_path / "rgb.png")
    with pytest.raises(EvaluationError, match="single-channel"):
        read_mask(tmp_path / "rgb.png")
    with pytest.raises(EvaluationError, match="not found"):
        read_mask(tmp_path / "absent.png")
