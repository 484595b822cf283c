"""`vos.Detector` against Ultralytics itself, on files Ultralytics exports, and its refusals.

The oracle (tests/oracles/yolo_reference.py, in a process of its own) builds YOLO11n (the raw detect head, NMS
outside) and YOLO26n (the end-to-end head, (1, 300, 6)) from their YAMLs with random weights, raises a few classes'
score biases so that random weights detect something, exports both to ONNX and predicts with them. vos runs the
same files: boxes, scores and classes must equal Ultralytics' within 1e-3, on a landscape frame and a portrait crop
(letterbox padding on either axis), with and without a class filter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import vos
from tests.data_paths import require_davis

REPO = Path(__file__).resolve().parents[1]
REFS = REPO / ".refs"
ORACLE = REPO / "tests" / "oracles" / "yolo_reference.py"
IMGSZ = 320
TOL = 1e-3
RUNS = [
    {"conf": 0.53, "iou": 0.7, "classes": None},
    {"conf": 0.5, "iou": 0.5, "classes": [0, 5]},
]
CLASS_BIAS = {"0": 0.0, "2": 0.05, "5": -0.1}
MODELS = {
    "yolo11n": {"yaml": "yolo11n.yaml", "nms": None, "class_bias": CLASS_BIAS},
    "yolo26n": {"yaml": "yolo26n.yaml", "nms": False, "class_bias": CLASS_BIAS},
}


def _require_ultralytics() -> None:
    if not (REFS / "ultralytics" / "ultralytics").is_dir():
        message = f"Ultralytics (the detector oracle) is not installed in {REFS}: run scripts/install-dev.sh"
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The oracle's ONNX files, the images it predicted on (RGB) and its predictions."""
    _require_ultralytics()
    sys.path.insert(0, str(ORACLE.parent))
    try:
        from yolo_reference import reference_env
    finally:
        sys.path.remove(str(ORACLE.parent))
    root = require_davis("JPEGImages/480p/car-shadow/00000.jpg")
    out = tmp_path_factory.mktemp("yolo")
    frame = np.asarray(Image.open(root / "JPEGImages/480p/car-shadow/00000.jpg").convert("RGB"))
    portrait = np.ascontiguousarray(frame[:, 300:560])  # 480 x 260: padded left and right
    images = [frame, portrait]
    paths = []
    for i, image in enumerate(images):
        paths.append(str(out / f"image{i}.png"))
        Image.fromarray(image).save(paths[-1])
    spec = {"out": str(out), "imgsz": IMGSZ, "seed": 0, "models": MODELS, "images": paths, "runs": RUNS}
    (out / "spec.json").write_text(json.dumps(spec))
    run = subprocess.run(
        [sys.executable, str(ORACLE), str(out / "spec.json")], env=reference_env(REFS, out / "config"),
        capture_output=True, text=True, timeout=600, cwd=out, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return {"out": out, "images": images, "predictions": json.loads((out / "predictions.json").read_text())}


@pytest.mark.parametrize("name", list(MODELS))
def test_detections_equal_ultralytics(reference: dict, name: str):
    path = reference["out"] / f"{name}.onnx"
    for run, expected_per_image in zip(RUNS, reference["predictions"][name]):
        classes = None if run["classes"] is None else [str(c) for c in run["classes"]]
        detector = vos.Detector(path, conf=run["conf"], iou=run["iou"], classes=classes)
        assert detector.input_hw == (IMGSZ, IMGSZ)
        for image, expected in zip(reference["images"], expected_per_image):
            found = detector(image)
            assert 5 <= len(expected["scores"]) < 300, "the oracle's detections should be neither none nor capped"
            assert len(found) == len(expected["scores"])
            np.testing.assert_allclose(found.boxes, np.asarray(expected["boxes"]).reshape(-1, 4), atol=TOL, rtol=0)
            np.testing.assert_allclose(found.scores, expected["scores"], atol=TOL, rtol=0)
            assert found.classes.tolist() == expected["classes"]
            if run["classes"] is not None:
                assert set(found.classes.tolist()) <= set(run["classes"])


def test_class_names_come_from_the_metadata_or_a_labels_file(reference: dict, tmp_path: Path):
    path = reference["out"] / "yolo11n.onnx"
    detector = vos.Detector(path)
    assert len(detector.names) == 80 and detector.names[0] == "0"  # Ultralytics names a YAML model's classes 0..79
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["person", "bicycle", "car"] + [f"thing{i}" for i in range(77)]) + "\n")
    named = vos.Detector(path, labels=labels, classes=["car"])
    found = named(reference["images"][0])
    assert len(found) and set(found.class_names) == {"car"}
    with pytest.raises(vos.ConfigError, match=r"no class 'dog'; its classes: person, bicycle, car, thing0"):
        vos.Detector(path, labels=labels, classes=["dog"])
    short = tmp_path / "short.yaml"
    short.write_text("names: {0: person, 1: car}\n")
    with pytest.raises(vos.ConfigError, match="names 2 classes, the detector .* has 80"):
        vos.Detector(path, labels=short)
    on_openvino = vos.Detector(path, backend="openvino", labels=labels, classes=["car"])(reference["images"][0])
    np.testing.assert_allclose(on_openvino.boxes, found.boxes, atol=0.05)  # fp32 unless asked: the same detections
    with pytest.raises(vos.ConfigError, match="ONNX Runtime runs the detector in fp32"):
        vos.Detector(path, precision="bf16")


def _tiny_onnx(path: Path, outputs: list[tuple[str, list[int]]], metadata: dict[str, str] | None = None) -> Path:
    """An ONNX file taking a (1, 3, 64, 64) image and giving constant outputs of the given shapes."""
    import onnx
    from onnx import TensorProto, helper

    nodes, values = [], []
    for name, shape in outputs:
        const = helper.make_tensor(f"{name}_value", TensorProto.FLOAT, shape, np.zeros(shape, np.float32).ravel())
        nodes.append(helper.make_node("Constant", [], [name], value=const))
        values.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])
    model = helper.make_model(
        helper.make_graph(nodes, "g", [image], values), opset_imports=[helper.make_opsetid("", 17)]
    )
    for k, v in (metadata or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, path)
    return path


def test_files_that_are_no_detector_are_refused(tmp_path: Path):
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_bytes(b"\x00garbage" * 50)
    with pytest.raises(vos.ConfigError, match="is not an ONNX model"):
        vos.Detector(not_onnx)
    with pytest.raises(vos.ConfigError, match="no detector at"):
        vos.Detector(tmp_path / "missing.onnx")
    features = _tiny_onnx(tmp_path / "encoder.onnx", [("features", [1, 256, 64, 64])])
    with pytest.raises(vos.ConfigError, match=r"outputs are features \(1, 256, 64, 64\): vos reads YOLO detect heads"):
        vos.Detector(features)
    v5 = _tiny_onnx(tmp_path / "v5.onnx", [("output0", [1, 2100, 85])], {"names": "{0: 'person'}"})
    with pytest.raises(vos.ConfigError, match=r"output0 \(1, 2100, 85\)"):
        vos.Detector(v5)
    unnamed = _tiny_onnx(tmp_path / "e2e.onnx", [("output0", [1, 300, 6])])
    with pytest.raises(vos.ConfigError, match="does not name its classes: give them with --labels"):
        vos.Detector(unnamed)
    raw = _tiny_onnx(
        tmp_path / "raw.onnx", [("output0", [1, 7, 84])], {"names": "{0: 'a', 1: 'b', 2: 'c'}", "imgsz": "[64, 64]"}
    )
    found = vos.Detector(raw)(np.zeros((48, 80, 3), np.uint8))
    assert len(found) == 0 and found.boxes.shape == (0, 4)
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB"):
        vos.Detector(raw)(np.zeros((48, 80), np.uint8))
