"""Engine messages: RLE round trips equal pycocotools, prompts are checked on arrival, hostile payloads are refused."""

from __future__ import annotations

import json
import re

import numpy as np
import pycocotools.mask as coco_mask
import pytest

from tests.prompt_fuzz import one_run
from vos.streams.messages import MAX_POINTS, ObjectMask, Rle, _rle_runs, json_schemas, parse_prompt
from vos.tracking.prompts import Prompt


def test_rle_round_trip_and_runs_equal_pycocotools(davis_root):
    from PIL import Image

    mask = np.array(Image.open(davis_root / "Annotations/480p/blackswan/00000.png")) > 0
    rle = Rle.from_mask(mask)
    assert rle.size == mask.shape and np.array_equal(rle.to_mask(), mask)
    runs = _rle_runs(rle.counts)
    assert sum(runs) == mask.size and sum(runs[1::2]) == mask.sum() == coco_mask.area(
        {"size": list(rle.size), "counts": rle.counts.encode()}
    )
    empty = Rle.from_mask(np.zeros((5, 7), bool))
    assert not empty.to_mask().any() and empty.to_mask().shape == (5, 7)


def test_object_mask_has_coco_bbox_and_area():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    obj = ObjectMask.from_mask(4, mask, 1.5)
    assert obj.bbox == (3, 2, 6, 3) and obj.area == 18
    assert json.loads(obj.model_dump_json())["mask"]["size"] == [10, 12]
    assert ObjectMask.from_mask(4, np.zeros((3, 3), bool), -2.0).bbox is None


def test_prompts_parse_into_tracker_prompts():
    p = parse_prompt(b'{"action": "add", "obj_id": 3, "points": [[10, 20], [5, 5]], "labels": [1, 0]}')
    prompt = p.to_prompt()
    assert isinstance(prompt, Prompt) and prompt.points.shape == (2, 2) and list(prompt.labels) == [1, 0]
    mask = np.zeros((6, 8), bool)
    mask[1:3, 2:5] = True
    m = parse_prompt(json.dumps({"action": "add", "obj_id": 1, "mask": Rle.from_mask(mask).model_dump()}))
    assert np.array_equal(m.to_prompt().mask, mask)
    assert parse_prompt('{"action": "remove", "obj_id": 2}').obj_id == 2
    assert parse_prompt('{"action": "reset"}').action == "reset"


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"not json", "invalid prompt message"),
        (b'{"action": "explode"}', "action"),
        (b'{"action": "add", "obj_id": "one", "points": [[1, 2]], "labels": [1]}', "obj_id"),
        (b'{"action": "add", "obj_id": -1, "box": [0, 0, 5, 5]}', "obj_id"),
        (b'{"action": "add", "obj_id": 1}', "needs a mask, points or a box"),
        (b'{"action": "add", "obj_id": 1, "points": [[1, 2]], "labels": [7]}', "labels"),
        (b'{"action": "add", "obj_id": 1, "points": [[1, 2]], "labels": [1, 1]}', "2 labels"),
        (b'{"action": "add", "obj_id": 1, "box": [0, 0, 1e30, 5]}', "box"),
        (b'{"action": "add", "obj_id": 1, "box": [0, 0, 5, 5], "extra": 1}', "extra"),
        (b'{"action": "add", "obj_id": 1, "mask": {"size": [4, 4], "counts": "0"}}', "do not cover"),
        (b'{"action": "add", "obj_id": 1, "mask": {"size": [100000, 100000], "counts": "0"}}', "size"),
        (b'{"action": "add", "obj_id": 1, "mask": {"size": [4, 4], "counts": "\\u0000\\u0001"}}', "invalid character"),
        (b'{"action": "add", "obj_id": 1, "mask": {"size": [4, 4], "counts": "oooooooooooooooooo"}}', "mask"),
    ],
)
def test_malformed_and_hostile_prompts_are_refused(payload, reason):
    with pytest.raises(ValueError, match=reason):
        parse_prompt(payload)


def test_huge_payloads_are_refused_by_size_limits():
    points = [[1, 1]] * (MAX_POINTS + 1)
    with pytest.raises(ValueError, match="points"):
        parse_prompt(json.dumps({"action": "add", "obj_id": 1, "points": points, "labels": [1] * len(points)}))
    with pytest.raises(ValueError, match="counts"):
        parse_prompt(json.dumps({"action": "add", "obj_id": 1, "mask": {"size": [9, 9], "counts": "1" * 5_000_000}}))


def test_published_schemas_are_current():
    from pathlib import Path

    folder = Path(__file__).resolve().parent.parent / "docs" / "schema"
    for name, schema in json_schemas().items():
        assert json.loads((folder / name).read_text()) == schema, f"regenerate docs/schema/{name}"


@pytest.mark.parametrize(
    "prompt, reason",
    [
        ({"points": [], "labels": []}, "without a single click"),
        ({"points": [[1, 2]], "labels": [True]}, "labels.0"),
        ({"points": [[1, 2]], "labels": [1.0]}, "labels.0"),
        ({"box": [50, 10, 20, 40]}, "x1 > x0 and y1 > y0"),
        ({"box": [10, 10, 10, 40]}, "x1 > x0 and y1 > y0"),
        ({"box": [1, 2, 3, 4], "mask": {"size": [2, 2], "counts": "04"}}, "not both"),
    ],
    ids=["no-click", "bool-label", "float-label", "inverted-box", "zero-width-box", "mask-and-box"],
)
def test_prompts_that_would_track_nothing_are_refused(prompt, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_prompt(json.dumps({"action": "add", "obj_id": 1, **prompt}))


def test_a_huge_declared_mask_costs_nothing_until_it_fits_the_frame():
    """A 100-byte message declaring a 16384² mask: parsed without decoding, refused by size before decoding
    (what it allocates shows it: a decoded mask would be 268 MB)."""
    import tracemalloc

    assert one_run(480 * 854) == Rle.from_mask(np.zeros((480, 854), bool)).counts
    payload = json.dumps({"action": "add", "obj_id": 1, "mask": {"size": [16384, 16384], "counts": one_run(16384**2)}})
    assert len(payload) < 100
    tracemalloc.start()
    message = parse_prompt(payload)
    with pytest.raises(ValueError, match=r"the mask prompt is \(16384, 16384\), the frame is \(480, 854\)"):
        message.to_prompt((480, 854))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, peak


def test_rle_runs_match_pycocotools_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(100):
        h, w = rng.integers(1, 120, 2)
        mask = rng.random((h, w)) < rng.random()
        rle = Rle.from_mask(mask)
        runs = _rle_runs(rle.counts)
        flat = mask.flatten(order="F")
        changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
        bounds = np.concatenate(([0], changes, [flat.size]))
        expected = np.diff(bounds).tolist()
        if flat[0]:
            expected = [0] + expected
        assert runs.tolist() == expected
        np.testing.assert_array_equal(rle.to_mask(), mask)


@pytest.mark.parametrize(
    "payload, reason",
    [
        ({"obj_id": 1, "points": [[5000, 5000]], "labels": [1]}, "point (5000, 5000) lies outside the 854x480 frame"),
        ({"obj_id": 1, "points": [[10, 10], [-1, 3]], "labels": [1, 0]}, "point (-1, 3) lies outside"),
        ({"obj_id": 1, "box": [10, 10, 900, 400]}, "box corner (900, 400) lies outside the 854x480 frame"),
    ],
)
def test_points_and_boxes_outside_the_frame_are_refused_with_its_size(payload, reason):
    message = parse_prompt(json.dumps({"action": "add", **payload}))  # well-formed: only the frame can refuse it
    with pytest.raises(ValueError, match=re.escape(reason)):
        message.to_prompt((480, 854))


def test_prompts_on_the_frame_edges_are_accepted():
    prompt = parse_prompt(
        '{"action": "add", "obj_id": 1, "points": [[0, 0], [854, 480]], "labels": [1, 0], "box": [0, 0, 854, 480]}'
    )
    assert prompt.to_prompt((480, 854)).num_points == 4
    Prompt.make(points=[[853.5, 479.5]], labels=[1]).check_size((480, 854))
