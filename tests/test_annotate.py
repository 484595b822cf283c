"""`vos annotate` / `vos.auto_annotate`: a detector's boxes segmented, written as YOLO labels, COCO and masklets.

The detector is a hand-made ONNX file of the YOLO11 layout (constant boxes: `tests.yolo_files`). With random weights
a box's mask is noise, so the formats are checked exactly with the segmenter swapped for one that returns each
box's rectangle (YOLO polygons read back by Ultralytics' own label checker where it is installed, COCO by
pycocotools), and the real model then runs the same paths end to end: images with a corrupt one, a rerun that
skips finished work, a clip of frames with one id per object across frames, and the refusals.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

import vos
from tests.data_paths import require_davis
from tests.yolo_files import yolo_layout_file
from vos.annotation.annotate import Annotator, annotate, items_of
from vos.cli import main

NAMES = {0: "person", 1: "car"}
# On the 64 x 64 input an 854 x 480 frame is scaled by 64 / 854 and padded 14 rows above.
BOXES = [(32, 32, 20, 10), (16, 25, 10, 12)]  # centre x, y, width, height on the input
CLASSES = [1, 0]


@pytest.fixture(scope="module")
def model(tracking_checkpoint):
    return vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=512)


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    root = require_davis("JPEGImages/480p/car-shadow/00000.jpg", "JPEGImages/480p/dog/00000.jpg")
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("car-shadow", "dog"):
        Image.open(root / f"JPEGImages/480p/{name}/00000.jpg").save(folder / f"{name}.jpg")
    return folder


@pytest.fixture()
def detector_file(tmp_path: Path) -> Path:
    return yolo_layout_file(tmp_path / "det.onnx", BOXES, CLASSES, NAMES)


def _rectangles(detector: vos.Detector, hw: tuple[int, int]):
    """A segmenter's `predict` giving each box's pixels."""

    def predict(box, multimask_output):
        masks = np.zeros((len(box), 1, *hw), bool)
        for i, (x0, y0, x1, y1) in enumerate(np.round(box).astype(int)):
            masks[i, 0, y0:y1, x0:x1] = True
        return masks, None, None

    return predict


def test_formats_hold_the_masks(model, images: Path, detector_file: Path, tmp_path: Path):
    detector = vos.Detector(detector_file)
    annotator = Annotator(detector, model, tmp_path / "out")
    annotator.predictor.predict = _rectangles(detector, (480, 854))
    summary = annotate(items_of([images]), annotator, progress=False)
    assert (summary.images, summary.objects, summary.unreadable) == (2, 4, 0)
    boxes = detector(np.zeros((480, 854, 3), np.uint8)).boxes  # the boxes on the frame, as the annotator got them
    lines = (tmp_path / "out" / "labels" / "images" / "dog.txt").read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["1", "0"]  # best first: both score 0.9, the car's row first
    for line, (x0, y0, x1, y1) in zip(lines, np.round(boxes).astype(int)):
        corners = np.array(line.split()[1:], float).reshape(-1, 2) * [854, 480]
        assert len(corners) == 4  # a rectangle's outline: its 4 corner pixels
        np.testing.assert_allclose(corners.min(0), [x0, y0], atol=0.01)
        np.testing.assert_allclose(corners.max(0), [x1 - 1, y1 - 1], atol=0.01)
    coco = COCO(str(tmp_path / "out" / "instances.json"))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["person", "car"]
    assert len(coco.getImgIds()) == 2 and len(coco.getAnnIds()) == 4
    for ann in coco.loadAnns(coco.getAnnIds()):
        x0, y0, x1, y1 = np.round(boxes[0 if ann["category_id"] == 2 else 1]).astype(int)
        expected = np.zeros((480, 854), np.uint8)
        expected[y0:y1, x0:x1] = 1
        assert (coco.annToMask(ann) == expected).all() and ann["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    _ultralytics_reads(tmp_path, images, tmp_path / "out" / "labels" / "images")


def _ultralytics_reads(tmp_path: Path, images: Path, labels: Path) -> None:
    """Ultralytics' label checker finds two polygons per image, classes 1 and 0, nothing corrupt."""
    refs = Path(__file__).resolve().parents[1] / ".refs"
    if not (refs / "ultralytics" / "ultralytics").is_dir():
        return  # the detector tests say why it is missing (tests/test_detector.py)
    sys.path.insert(0, str(Path(__file__).parent / "oracles"))
    try:
        from yolo_reference import reference_env
    finally:
        sys.path.pop(0)
    pairs = [[str(p), str(labels / f"{p.stem}.txt")] for p in sorted(images.iterdir())]
    spec = tmp_path / "verify.json"
    spec.write_text(json.dumps({"out": str(tmp_path), "verify": pairs, "num_classes": 2}))
    oracle = Path(__file__).parent / "oracles" / "yolo_reference.py"
    run = subprocess.run(
        [sys.executable, str(oracle), str(spec)], env=reference_env(refs, tmp_path / "config"), capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    verified = json.loads((tmp_path / "verified.json").read_text())
    assert [(v["classes"], v["segments"], v["corrupt"]) for v in verified] == [([1, 0], 2, 0)] * 2, verified


def test_images_from_the_command_line_skip_the_unreadable_and_resume(
    tracking_checkpoint, images: Path, detector_file: Path, tmp_path: Path, capsys
):
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    out = tmp_path / "out"
    model = ["--checkpoint", str(tracking_checkpoint), "--config", "sam2.1_hiera_t", "--image-size", "512"]
    args = ["annotate", str(images), "--detector", str(detector_file), "--out", str(out), "--quiet", *model]
    assert main(args) == 1  # the corrupt image fails the run; the others are written
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "1 unreadable (skipped)" in err
    for name in ("car-shadow", "dog"):
        lines = (out / "labels" / "images" / f"{name}.txt").read_text().splitlines()
        record = json.loads((out / "records" / "images" / f"{name}.json").read_text())
        assert len(lines) == len(record["annotations"]) <= 2
    assert not (out / "labels" / "images" / "broken.txt").exists()
    assert main(args) == 1
    assert "2 done before (skipped)" in capsys.readouterr().err


def test_a_clip_keeps_one_id_per_object(model, detector_file: Path, tmp_path: Path):
    clip = tmp_path / "clip"
    clip.mkdir()
    for t in range(4):  # 128 x 96: a person square and a car bar, the person moving right
        image = np.full((96, 128, 3), 128, np.uint8)
        image[18:42, 7 + 3 * t : 24 + 3 * t] = (200, 60, 60)
        image[67:84, 70:111] = (60, 60, 200)
        Image.fromarray(image).save(clip / f"{t:05d}.png")
    detector = vos.Detector(yolo_layout_file(tmp_path / "d.onnx", [(10, 23, 8, 12), (45, 45, 20, 8)], [0, 1], NAMES))
    # detections on frame 0 only: with random weights the tracked masks are noise, and a later detection would not
    # find its object in them (tests/test_detect_tracking.py checks that with a segmenter that tracks)
    summary = annotate(items_of([clip], frames=True), Annotator(detector, model, tmp_path / "out", 0), progress=False)
    assert (summary.clips, summary.frames, summary.objects) == (1, 4, 2)
    masklets = json.loads((tmp_path / "out" / "clip" / "masklets.json").read_text())
    assert masklets["masklet_id"] == [1, 2] and masklets["masklet_class"] == ["person", "car"]
    assert len(masklets["masklet"]) == 4 and all(len(frame) == 2 for frame in masklets["masklet"])
    instances = json.loads((tmp_path / "out" / "clip" / "instances.json").read_text())
    assert [i["file_name"] for i in instances["images"]] == ["00000", "00001", "00002", "00003"]
    assert {a["track_id"] for a in instances["annotations"]} <= {1, 2}
    labels = sorted(p.name for p in (tmp_path / "out" / "clip" / "labels").iterdir())
    assert labels == [f"{t:05d}.txt" for t in range(4)]
    again = annotate(items_of([clip], frames=True), Annotator(detector, model, tmp_path / "out", 0), progress=False)
    assert again.done_before == 1 and again.clips == 0


def test_bad_inputs_are_refused(tracking_checkpoint, images: Path, detector_file: Path, tmp_path: Path, capsys):
    model = ["--checkpoint", str(tracking_checkpoint), "--config", "sam2.1_hiera_t", "--image-size", "512"]
    run = ["annotate", "--detector", str(detector_file), "--quiet", *model]
    assert main([*run, str(images), "--out", str(images)]) == 2
    assert "would put labels among the inputs" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*run, str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no .jpg/.jpeg/.png images in" in capsys.readouterr().err
    assert main(["annotate", str(images), "--out", str(tmp_path / "o"), *model]) == 2
    assert "give --detector FILE" in capsys.readouterr().err
    assert main([*run, str(images), "--out", str(tmp_path / "o"), "--classes", "dog"]) == 2
    assert "its classes: person, car" in capsys.readouterr().err
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42 broken")
    assert main([*run, str(video), "--out", str(tmp_path / "o")]) == 1
    assert "skipped" in capsys.readouterr().err and not (tmp_path / "o" / "clip" / "masklets.json").exists()
    Image.open(images / "dog.jpg").save(tmp_path / "dog.png")
    with pytest.raises(vos.ConfigError, match="would both write"):
        vos.auto_annotate([images / "dog.jpg", tmp_path / "dog.png"], detector_file, output_dir=tmp_path / "o")
