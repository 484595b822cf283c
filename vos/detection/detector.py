"""`Detector`: a detection model from an ONNX file, frame in, boxes with classes and scores out.

    detector = vos.Detector("yolo11n.onnx", classes=["person", "car"], conf=0.4)
    found = detector(frame)                  # (H, W, 3) uint8 RGB
    found.boxes, found.scores, found.class_names

The file's layout is read from its output (`vos.detection.layouts`), its class names and input size from the
metadata Ultralytics writes (`names`, `imgsz`) or a labels file. ONNX Runtime or OpenVINO runs it.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vos.config import DetectorSettings, checked
from vos.detection import layouts
from vos.detection.letterbox import Letterbox
from vos.errors import ConfigError
from vos.export.onnx import require_extra

DEFAULT_INPUT = 640
"""Input size of a file whose input is of variable size and whose metadata names none (Ultralytics' default)."""
MAX_LABELS_BYTES = 1 << 20
TRACKING_FIELDS = ("every_n_frames", "cover_thresh", "retire_after", "max_new_per_frame")
MASK_COEFFICIENTS = 32
"""Rows after the class scores in the head of an Ultralytics segmentation model (its `task` metadata: segment)."""


@dataclass(frozen=True)
class Detections:
    """One frame's detections, best first: boxes (N, 4) float32 x0, y0, x1, y1 in frame pixels, scores (N,) float32,
    classes (N,) int64 indices into `names`."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    names: dict[int, str]

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def class_names(self) -> list[str]:
        return [self.names.get(int(c), str(int(c))) for c in self.classes]


class Detector:
    """An ONNX detection model of a YOLO layout; `detector(frame)` -> `Detections`.

    Options (`vos.config.DetectorSettings`): classes, labels, conf, iou, max_det, backend (onnxruntime or openvino).
    A file that is no ONNX model, or whose outputs match no known layout, is refused with what was found.
    """

    def __init__(self, model: str | Path | DetectorSettings, **options: Any) -> None:
        if isinstance(model, DetectorSettings):
            settings = model.model_copy(update=options) if options else model
        else:
            settings = checked(DetectorSettings, "detector settings", model=model, **options)
        self.settings = settings
        self.path = Path(settings.model)
        model = _read_model(self.path)
        graph, metadata = model.graph, {p.key: p.value for p in model.metadata_props}
        own = _metadata_names(metadata)
        labels = read_labels(settings.labels) if settings.labels is not None else None
        self.input_name, self.input_hw = _input(graph, metadata, self.path)
        self.layout, self.num_classes = _layout(graph, own or labels, metadata.get("task"), self.path)
        if labels is not None and len(labels) != self.num_classes:
            raise ConfigError(
                f"{settings.labels} names {len(labels)} classes, the detector {self.path} has {self.num_classes}"
            )
        self.names = labels or own or {i: str(i) for i in range(self.num_classes)}
        self.keep = class_ids(settings.classes, self.names) if settings.classes else None
        self._run = _runner(self.path, settings.backend, settings.precision, self.input_name)

    def with_tracking(self, **settings: Any) -> Detector:
        """This detector (the same loaded file) under other tracking settings: every_n_frames, cover_thresh,
        retire_after, max_new_per_frame."""
        unknown = set(settings) - set(TRACKING_FIELDS)
        if unknown:
            raise ValueError(
                f"not tracking settings: {', '.join(sorted(unknown))} (those are {', '.join(TRACKING_FIELDS)})"
            )
        other = copy.copy(self)
        other.settings = checked(DetectorSettings, "detector settings", **{**self.settings.model_dump(), **settings})
        return other

    def __call__(self, frame: np.ndarray) -> Detections:
        """Detections on an (H, W, 3) uint8 RGB frame."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"the detector takes (H, W, 3) uint8 RGB frames, not {frame.dtype} {frame.shape}")
        box = Letterbox.fit(frame.shape[:2], self.input_hw)
        image = box.apply(frame).transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        s = self.settings
        boxes, scores, classes = layouts.decode(
            self._run(image), self.layout, self.num_classes, s.conf, s.iou, self.keep, s.max_det
        )
        return Detections(box.to_frame(boxes), scores, classes, self.names)


def _read_model(path: Path):
    """The file's ONNX model (no external weights loaded); ConfigError for a file that is none."""
    onnx = require_extra("onnx")
    if not path.is_file():
        raise ConfigError(f"no detector at {path}: give an ONNX file (e.g. `yolo export model=yolo11n.pt format=onnx`)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and friends: not an ONNX file
        raise ConfigError(
            f"{path} is not an ONNX model ({type(e).__name__}): give a detector exported to ONNX"
        ) from None
    if not model.graph.node:
        raise ConfigError(f"{path} holds no graph: give a detector exported to ONNX")
    return model


def _dims(value_info) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim)


def _shapes(values) -> str:
    return ", ".join(f"{v.name} {tuple('?' if d is None else d for d in _dims(v))}" for v in values)


def _input(graph, metadata: dict[str, str], path: Path) -> tuple[str, tuple[int, int]]:
    """The image input's name and (h, w): its static size, else the metadata's `imgsz`, else 640."""
    weights = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in weights]
    if len(inputs) != 1 or len(_dims(inputs[0])) != 4 or _dims(inputs[0])[1] not in (3, None):
        raise ConfigError(
            f"{path} is not a detector vos can run: it takes {_shapes(inputs) or 'nothing'}; vos runs detectors "
            "that take one (1, 3, H, W) image"
        )
    _, _, h, w = _dims(inputs[0])
    if h and w:
        return inputs[0].name, (h, w)
    size = _literal(metadata.get("imgsz"))
    if isinstance(size, int):
        return inputs[0].name, (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(x, int) for x in size):
        return inputs[0].name, (size[0], size[1])
    return inputs[0].name, (DEFAULT_INPUT, DEFAULT_INPUT)


def _layout(graph, names: dict[int, str] | None, task: str | None, path: Path) -> tuple[layouts.Layout, int]:
    """The first output's layout and the number of classes: as many as the file (else the labels file) names, else
    the head's rows after the box (less a segmentation head's mask coefficients)."""
    first = graph.output[0] if graph.output else None
    shape = _dims(first) if first is not None else ()
    layout = layouts.identify(shape, len(names) if names else None)
    if layout is None:
        raise ConfigError(
            f"{path}'s outputs are {_shapes(graph.output) or 'none'}: vos reads YOLO detect heads, (1, 4 + classes, "
            "anchors) with boxes as centre and size (YOLOv8, YOLO11), and heads with NMS inside, (1, N, 6): "
            "x0, y0, x1, y1, score, class (YOLO26, or exported with nms=True)"
        )
    if names:
        return layout, len(names)
    if layout == "end2end":
        raise ConfigError(f"{path} does not name its classes: give them with --labels FILE (one name per line)")
    return layout, shape[1] - 4 - (MASK_COEFFICIENTS if task == "segment" else 0)


def _literal(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _metadata_names(metadata: dict[str, str]) -> dict[int, str] | None:
    """Ultralytics' `names` metadata ("{0: 'person', ...}"), or None."""
    names = _literal(metadata.get("names"))
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        return {int(k): str(v) for k, v in sorted(names.items())}
    if isinstance(names, list):
        return {i: str(v) for i, v in enumerate(names)}
    return None


def read_labels(path: Path) -> dict[int, str]:
    """Class names from a text file (one per line) or a YAML file with `names` (a list, or a dict by id)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no labels file at {path}")
    if path.stat().st_size > MAX_LABELS_BYTES:
        raise ConfigError(f"{path} is over {MAX_LABELS_BYTES >> 20} MB: not a labels file")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            names = (yaml.safe_load(text) or {}).get("names")
        except (yaml.YAMLError, AttributeError):
            names = None
        if isinstance(names, list):
            return {i: str(v) for i, v in enumerate(names)}
        if isinstance(names, dict) and all(isinstance(k, int) for k in names):
            return {int(k): str(v) for k, v in sorted(names.items())}
        raise ConfigError(f"{path} has no `names` list or {{id: name}} map")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ConfigError(f"{path} names no class: give one class name per line")
    return dict(enumerate(names))


def class_ids(wanted: list[str], names: dict[int, str]) -> np.ndarray:
    """The ids of class names (or ids given as text); ConfigError listing the detector's classes for others."""
    by_name = {v: k for k, v in names.items()}
    ids = []
    for name in wanted:
        if name in by_name:
            ids.append(by_name[name])
        elif name.isdigit() and int(name) in names:
            ids.append(int(name))
        else:
            listed = ", ".join(names.values())
            raise ConfigError(f"the detector has no class {name!r}; its classes: {listed}")
    return np.asarray(ids, dtype=np.int64)


def _runner(path: Path, backend: str, precision: str, input_name: str):
    """A function running the file on a (1, 3, h, w) float32 image, giving its first output."""
    if backend == "openvino":
        from vos.export.openvino_runtime import openvino_core, resolve_openvino_precision

        core = openvino_core()
        hint = {"fp32": "f32", "bf16": "bf16"}[resolve_openvino_precision(precision, core)]
        try:
            compiled = core.compile_model(
                str(path), "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
            )
        except RuntimeError as e:
            raise ConfigError(f"OpenVINO cannot load {path}: {str(e).strip().splitlines()[0][:200]}") from None
        request = compiled.create_infer_request()
        output = compiled.outputs[0]
        return lambda image: request.infer({0: image})[output]
    if precision != "fp32":
        raise ConfigError(f"ONNX Runtime runs the detector in fp32: give --detector-backend openvino for {precision}")
    ort = require_extra("onnxruntime")
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT's own error types
        raise ConfigError(f"ONNX Runtime cannot load {path}: {str(e).strip().splitlines()[0][:200]}") from None
    first = session.get_outputs()[0].name
    return lambda image: session.run([first], {input_name: image})[0]
