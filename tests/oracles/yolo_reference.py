"""Ultralytics as a test oracle for `vos.detection`, run in a process of its own.

Ultralytics (PyPI `ultralytics==8.4.190`, AGPL-3.0: test-only, never imported by vos) is installed in
`.refs/ultralytics` with what it imports (scripts/install-dev.sh); a torchvision stand-in (`ultralytics_stubs`)
gives the version it reads at import and, as `torchvision.ops.nms`, Ultralytics' own NMS.

    python tests/oracles/yolo_reference.py SPEC.json

SPEC: {"out": folder, "imgsz": 320, "seed": 0, "models": {NAME: {"yaml": "yolo11n.yaml", "nms": null | false,
"class_bias": {class id: bias}}}, "images": [.png / .jpg paths], "runs": [{"conf": 0.25, "iou": 0.7, "classes":
null | [ids]}, ...]}.
Each model is built from its YAML with random weights (seeded; batch norms set to the statistics of the images,
the named classes' score biases set so that random weights give detections) and exported by Ultralytics to `out/NAME.onnx` at `imgsz` (`nms: false` asks YOLO26 for
its end-to-end head). Ultralytics' predictions on each image from that file go to `out/predictions.json`:
{NAME: [[{"boxes": [[x0, y0, x1, y1], ...], "scores": [...], "classes": [...]} per image] per run]}.
SPEC {"out": folder, "verify": [[image, label file], ...], "num_classes": N}: Ultralytics' label checker instead
(`verify_labels`).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

STUBS = Path(__file__).resolve().parent / "ultralytics_stubs"
HEAD_WEIGHT_SCALE = 0.1
OTHER_BIAS = -6.0


def reference_env(refs: Path, config_dir: Path) -> dict[str, str]:
    """Environment of a process that imports Ultralytics from `refs / "ultralytics"`."""
    path = os.pathsep.join(str(p) for p in (refs / "ultralytics", STUBS))
    return {**os.environ, "PYTHONPATH": path, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(config_dir)}


def _normalize(model, seed: int, images) -> None:
    """Batch norms set to the statistics of `images` ((N, 3, S, S) float, RGB in [0, 1]): freshly initialized, the
    features fade to zero through the layers and every anchor scores its class bias. Their scales and shifts are
    randomized too."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    for m in model.model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data = 0.5 + torch.rand(m.num_features, generator=g)
            m.bias.data = 0.2 * torch.randn(m.num_features, generator=g)
            m.reset_running_stats()
            m.momentum = None  # cumulative: the mean over the images
    model.model.train()
    with torch.no_grad():
        model.model(images)
    model.model.eval()


def _inputs(images, imgsz: int):
    """BGR images letterboxed as Ultralytics predicts them, (N, 3, S, S) RGB in [0, 1]."""
    import numpy as np
    import torch
    from ultralytics.data.augment import LetterBox

    boxed = [LetterBox(imgsz)(image=im)[..., ::-1] for im in images]
    return torch.from_numpy(np.stack(boxed).transpose(0, 3, 1, 2).copy()).float() / 255


def _set_head(model, biases: dict[str, float]) -> None:
    """The output convolutions' weights scaled down (class logits near their biases, varied boxes); every class's
    score bias at OTHER_BIAS, those named at theirs."""
    import torch

    head = model.model.model[-1]
    with torch.no_grad():
        for branch in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
            for level in getattr(head, branch, None) or []:
                level[-1].weight *= HEAD_WEIGHT_SCALE
                if branch.endswith("cv3"):
                    level[-1].bias.fill_(OTHER_BIAS)
                    for k, v in biases.items():
                        level[-1].bias[int(k)] = v


def verify_labels(spec: dict) -> None:
    """Ultralytics' own label checker (`verify_image_label`) on image / label file pairs; what it read to
    `out/verified.json`: per pair {"classes": [...], "segments": number of polygons, "corrupt": 0 | 1, "msg"}."""
    from ultralytics.data.utils import verify_image_label

    found = []
    for image, label in spec["verify"]:
        _, lb, _, segments, _, _, _, _, corrupt, msg = verify_image_label(
            (image, label, "", False, spec["num_classes"], 0, 0, False)
        )
        classes = [] if lb is None else [int(c) for c in lb[:, 0]]
        found.append({"classes": classes, "segments": len(segments or []), "corrupt": corrupt, "msg": msg})
    (Path(spec["out"]) / "verified.json").write_text(json.dumps(found))


def main(spec_file: str) -> None:
    import cv2
    import torch
    from ultralytics import YOLO

    spec = json.loads(Path(spec_file).read_text())
    if "verify" in spec:
        verify_labels(spec)
        return
    out = Path(spec["out"])
    images = [cv2.imread(p) for p in spec["images"]]  # BGR, as Ultralytics reads them
    found = {}
    for name, m in spec["models"].items():
        torch.manual_seed(spec["seed"])
        model = YOLO(m["yaml"])
        _normalize(model, spec["seed"], _inputs(images, spec["imgsz"]))
        _set_head(model, m.get("class_bias", {}))
        exported = model.export(format="onnx", imgsz=spec["imgsz"], simplify=False, nms=m.get("nms"), verbose=False)
        target = out / f"{name}.onnx"
        Path(exported).replace(target)
        detector = YOLO(str(target), task="detect")
        found[name] = [[_predict(detector, image, spec["imgsz"], run) for image in images] for run in spec["runs"]]
    (out / "predictions.json").write_text(json.dumps(found))


def _predict(detector, image, imgsz: int, run: dict) -> dict:
    r = detector(image, imgsz=imgsz, conf=run["conf"], iou=run["iou"], classes=run["classes"], verbose=False)[0].boxes
    return {"boxes": r.xyxy.tolist(), "scores": r.conf.tolist(), "classes": [int(c) for c in r.cls.tolist()]}


if __name__ == "__main__":
    main(sys.argv[1])
