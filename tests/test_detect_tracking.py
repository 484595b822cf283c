"""Discovery by class (`vos.Tracker(..., detector=...)`, `vos track --detector`): detections become objects.

The clip is synthetic: a "person" square crossing the frame, a "car" bar entering and leaving, a second person
entering later. The detector is swapped for one that returns each shape's box while it is on the frame, and the
model for one that segments each object as the shape its first box fell on (what a trained tracker would do: with
random weights a box prompt's mask is noise), so what is checked is discovery's own work: one id per object, its
class, no duplicate when a tracked object is detected again, retirement after it leaves. A last test runs the real
model and a real ONNX detector (a hand-made file of the YOLO11 layout) through `vos track`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vos
from tests.yolo_files import yolo_layout_file
from vos.config import DetectorSettings
from vos.detection.detector import Detections, Detector
from vos.tracking.detection import mask_box
from vos.tracking.segmenter import FrameFeatures, ObjectStep

H, W = 96, 128
NAMES = {0: "person", 1: "car"}


def shapes(t: int) -> dict[str, tuple[int, np.ndarray]]:
    """The shapes on frame t: name -> (class, (H, W) mask). person1 crosses from the left until frame 19; the car
    is there on frames 7-24; person2 from frame 30."""
    yy, xx = np.mgrid[:H, :W]
    out = {}
    if t < 20:
        out["person1"] = (0, (np.abs(xx - 15 - 3 * t) <= 8) & (np.abs(yy - 30) <= 12))
    if 7 <= t < 25:
        out["car"] = (1, (np.abs(xx - 90) <= 20) & (np.abs(yy - 75) <= 8))
    if t >= 30:
        out["person2"] = (0, (np.abs(xx - 40) <= 8) & (np.abs(yy - 60) <= 12))
    return out


def frame(t: int) -> np.ndarray:
    image = np.full((H, W, 3), 128, np.uint8)
    image[0, 0] = (t, 0, 0)  # the frame's index, for the stand-ins
    for k, (_, mask) in enumerate(shapes(t).values()):
        image[mask] = (40 + 60 * k, 200, 90)
    return image


class ShapeDetector(Detector):
    """Each shape's box on the frame, scored 0.9 (and a second, shifted box for person1: the same object)."""

    def __init__(self, settings: DetectorSettings) -> None:
        self.settings = settings
        self.names = NAMES
        self.calls = 0

    def __call__(self, image: np.ndarray) -> Detections:
        self.calls += 1
        boxes, classes = [], []
        for name, (cls, mask) in shapes(int(image[0, 0, 0])).items():
            boxes.append(mask_box(mask))
            classes.append(cls)
            if name == "person1":
                boxes.append(mask_box(mask) + np.float32([1, 1, 1, 1]))  # IoU > 0.5 with the first: one object
                classes.append(cls)
        n = len(boxes)
        return Detections(
            np.array(boxes, np.float32).reshape(n, 4), np.full(n, 0.9, np.float32), np.array(classes, np.int64), NAMES
        )


class ShapeSegmenter:
    """Stands in for the model: each object is the shape its first box prompt fell on, present while on the frame."""

    def __init__(self) -> None:
        self.names = ["person1", "car", "person2", "user"]

    def encode_image(self, image: np.ndarray) -> FrameFeatures:
        return FrameFeatures([], torch.zeros(1), (image.shape[0], image.shape[1]))

    def run(self, features: FrameFeatures, requests, frame_idx: int) -> list[ObjectStep]:
        now = shapes(frame_idx)
        steps = []
        for request in requests:
            if request.memory is None:  # a box on a shape, or a user's object elsewhere: no shape, always present
                box = request.prompt.box.reshape(4)
                name = max(now, key=lambda n: _iou(mask_box(now[n][1]), box))
                name = name if _iou(mask_box(now[name][1]), box) > 0 else "user"
            else:
                memory = request.memory
                last = (memory.cond | memory.recent_frames)[max(memory.cond.keys() | memory.recent_frames.keys())]
                name = self.names[int(last.features)]
            mask = now[name][1] if name in now else np.zeros((H, W), bool)
            logits = torch.from_numpy(np.where(mask, 10.0, -10.0).astype(np.float32))[None, None]
            score = torch.tensor([[5.0 if name in now or name == "user" else -5.0]])
            features = torch.tensor(float(self.names.index(name)))
            steps.append(ObjectStep(logits, score, torch.zeros(4), features, request.prompt is not None, None))
        return steps


def _iou(a: np.ndarray | None, b: np.ndarray) -> float:
    if a is None:
        return 0.0
    from vos.boxes import box_iou

    return float(box_iou(a, b[None])[0])


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return vos.load_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, image_size=512)


def _tracker(model, **settings) -> vos.Tracker:
    detector = ShapeDetector(DetectorSettings(model="shapes.onnx", **settings))
    tracker = vos.Tracker(model, detector=detector)
    tracker.segmenter = ShapeSegmenter()
    return tracker


def test_detected_objects_get_one_id_their_class_and_retire_after_leaving(model):
    tracker = _tracker(model, every_n_frames=5, retire_after=3)
    seen: dict[int, set[str]] = {}
    added, retired = {}, {}
    for t in range(36):
        result = tracker.step(frame(t))
        for obj_id in result.new_objects:
            added[obj_id] = t
        for obj_id in result.retired:
            retired[obj_id] = t
        for obj_id, name in result.classes.items():
            seen.setdefault(obj_id, set()).add(name)
            assert result.class_scores[obj_id] == pytest.approx(0.9)
    # person1 on frame 0; the car (there from 7) on frame 10; person2 (from 30) on frame 30: one id each, in order
    assert added == {1: 0, 2: 10, 3: 30}
    assert seen == {1: {"person"}, 2: {"car"}, 3: {"person"}}
    # person1 leaves after frame 19, the car after 24: absent 3 frames in a row, then removed with their memory
    assert retired == {1: 22, 2: 27}
    assert tracker.object_ids == [3] and sorted(tracker._memories) == [3]
    d = tracker.detection
    assert d.looks == 8 and d.found == 3 and d.retired == 2 and tracker.detection.detector.calls == 8


def test_classes_filter_room_and_every_frame(model):
    tracker = _tracker(model, every_n_frames=1, retire_after=0)
    tracker.config = tracker.config.model_copy(update={"max_objects": 2})
    tracker.add_prompt(9, box=(110, 2, 126, 12))  # a user's object, away from the shapes: takes one place
    for t in range(12):
        result = tracker.step(frame(t))
    assert sorted(tracker.object_ids) == [9, 10]  # room for one: person1, with an id above the user's
    assert result.classes == {10: "person"} and 9 not in result.classes
    assert tracker.detection.looks == 1  # frame 0; then max_objects is reached and the detector does not run
    tracker.remove_object(9)
    result = tracker.step(frame(12))  # room again: the car is added, person1 (tracked) is not added twice
    assert result.new_objects == [11] and result.classes == {10: "person", 11: "car"}
    assert tracker.detection.looks == 2 and tracker.detection.retired == 0


def test_detector_settings_are_checked(model):
    with pytest.raises(ValueError, match="not both"):
        vos.TrackerConfig(detector={"model": "x.onnx"}, discover={})
    with pytest.raises(ValueError, match="every_n_frames"):
        DetectorSettings(model="x.onnx", every_n_frames=-1)
    with pytest.raises(vos.ConfigError, match="no detector at"):
        vos.Tracker(model, detector={"model": "missing.onnx"})


def test_track_with_a_detector_from_the_command_line(tracking_checkpoint, tmp_path: Path, capsys):
    """`vos track FOLDER --detector FILE --classes car`: the car becomes object 1 with its class and score in every
    masks line; the person is filtered out; the summary counts the detections."""
    from PIL import Image

    from vos.cli import main

    clip = tmp_path / "clip"
    clip.mkdir()
    for t in range(3):
        Image.fromarray(frame(t)).save(clip / f"{t:05d}.png")
    # on the 64 x 64 input the 128 x 96 frames are scaled by 0.5 and padded 8 rows above: a person and a car box
    detector = yolo_layout_file(tmp_path / "det.onnx", [(10, 23, 8, 12), (45, 45, 20, 8)], [0, 1], NAMES)
    model = ["--checkpoint", str(tracking_checkpoint), "--config", "sam2.1_hiera_t", "--image-size", "512", "--quiet"]
    code = main(
        ["track", str(clip), "--detector", str(detector), "--classes", "car", "--out", str(tmp_path / "out"), *model]
    )
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(line) for line in (tmp_path / "out" / "masks.jsonl").read_text().splitlines()]
    assert [[(o["id"], o["class_name"]) for o in line["objects"]] for line in lines] == [[(1, "car")]] * 3
    assert lines[0]["objects"][0]["class_score"] == pytest.approx(0.9)
    assert "1 objects detected" in capsys.readouterr().err
    assert (
        main(
            ["track", str(clip), "--detector", str(detector), "--classes", "dog", "--out", str(tmp_path / "o2"), *model]
        )
        == 2
    )
    assert "its classes: person, car" in capsys.readouterr().err


def test_batch_with_a_detector_on_ray_writes_what_track_writes(tracking_checkpoint, tmp_path: Path, capsys):
    """`vos batch CLIP --detector FILE --classes car` on Ray (one worker, one thread) writes the label maps and masks
    lines (the car as object 1, its class and score) that `vos track` writes with one thread."""
    from tests.ray_fixtures import ray_or_skip

    ray_or_skip()
    from PIL import Image

    from vos.cli import main

    clip = tmp_path / "clip"
    clip.mkdir()
    for t in range(3):
        Image.fromarray(frame(8 + t)).save(clip / f"{t:05d}.png")
    detector = yolo_layout_file(tmp_path / "det.onnx", [(10, 23, 8, 12), (45, 45, 20, 8)], [0, 1], NAMES)
    model = ["--checkpoint", str(tracking_checkpoint), "--config", "sam2.1_hiera_t", "--image-size", "512", "--quiet"]
    found = ["--detector", str(detector), "--classes", "car"]
    assert main(["track", str(clip), *found, "--out", str(tmp_path / "track"), "--threads", "1", *model]) == 0
    code = main(["batch", str(clip), *found, "--out", str(tmp_path / "batch"), "--workers", "1", "--num-cpus", "1",
                 *model])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    track, batch = tmp_path / "track", tmp_path / "batch" / "clip"
    lines = [json.loads(line) for line in (batch / "masks.jsonl").read_text().splitlines()]
    assert [[(o["id"], o["class_name"]) for o in line["objects"]] for line in lines] == [[(1, "car")]] * 3
    assert (batch / "masks.jsonl").read_text() == (track / "masks.jsonl").read_text()
    for png in sorted(track.glob("*.png")):
        assert png.read_bytes() == (batch / png.name).read_bytes(), png.name
