"""What a detection frame costs a live tracker: EdgeTAM tracking with a YOLO detector every N frames (`--every`),
the frames with a detection against the frames between them, in one run; and the detector's own time.

The detector is `--detector FILE`, else YOLO11n with random weights exported by Ultralytics itself at 640 px (its
test-only oracle, tests/oracles/yolo_reference.py, from .refs/ultralytics; batch norms set on the frame, one class's
score bias raised so that it finds objects on every frame). The tracker: EdgeTAM at 512 px with random weights (the
object-score bias shifted, objects stay present), one object prompted by DAVIS's first annotation, PyTorch at
`--precision` (auto: bf16 where native), on car-shadow's 854x480 frames (looped). Each detection frame adds at most
`--new` objects, so there are more objects after each; a detection frame is compared with the median of the frames
after it until the next one (the same objects, tracked). `retire_after` is 0: with random weights the new objects'
masks are noise and the detector finds them again as new ones; `--new` bounds it.

    python benchmarks/bench_detect.py [--frames 60] [--every 10] [--new 1] [--detector yolo11n.onnx]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "tests" / "oracles")]

from bench_speed import cpu_description  # noqa: E402
from PIL import Image  # noqa: E402

import vos  # noqa: E402
from tests.conftest import DEFAULT_DAVIS, OBJECT_SCORE_BIAS_OFFSET  # noqa: E402
from vos.build import save_random_checkpoint  # noqa: E402

SEQUENCE = "car-shadow"


def yolo11n(out: Path, frame_file: Path, class_bias: float) -> Path:
    """YOLO11n, random weights, exported by Ultralytics at 640 px; class 0's score bias `class_bias`."""
    from yolo_reference import reference_env

    spec = {
        "out": str(out), "imgsz": 640, "seed": 0, "images": [str(frame_file.resolve())], "runs": [],
        "models": {"yolo11n": {"yaml": "yolo11n.yaml", "nms": None, "class_bias": {"0": class_bias}}},
    }  # fmt: skip
    (out / "spec.json").write_text(json.dumps(spec))
    run = subprocess.run(
        [sys.executable, str(REPO / "tests" / "oracles" / "yolo_reference.py"), str(out / "spec.json")],
        env=reference_env(REPO / ".refs", out / "config"), capture_output=True, text=True, cwd=out, check=False,
    )  # fmt: skip
    if run.returncode:
        raise SystemExit(f"Ultralytics could not export YOLO11n (scripts/install-dev.sh installs it):\n{run.stderr[-2000:]}")
    return out / "yolo11n.onnx"


def edgetam(tmp: Path) -> Path:
    path = save_random_checkpoint("edgetam", tmp / "edgetam")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state["model"]["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += OBJECT_SCORE_BIAS_OFFSET
    torch.save(state, path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--new", type=int, default=1, help="objects a detection frame adds at most")
    p.add_argument("--detector", type=Path, help="an ONNX detector (default: YOLO11n, random weights, 640 px)")
    p.add_argument("--precision", default="auto")
    p.add_argument("--detector-backend", default="onnxruntime", choices=("onnxruntime", "openvino"))
    p.add_argument("--detector-precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--class-bias", type=float, default=-1.3, help="YOLO11n: class 0's score bias (more: more found)")
    args = p.parse_args()
    folder = DEFAULT_DAVIS / "JPEGImages" / "480p" / SEQUENCE
    paths = sorted(folder.glob("*.jpg"))
    frames = [np.asarray(Image.open(paths[i % len(paths)]).convert("RGB")) for i in range(args.frames)]
    first_mask = np.asarray(Image.open(DEFAULT_DAVIS / "Annotations" / "480p" / SEQUENCE / "00000.png")) > 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        file = args.detector or yolo11n(tmp, paths[0], args.class_bias)
        detector = vos.Detector(file, backend=args.detector_backend, precision=args.detector_precision).with_tracking(
            every_n_frames=args.every, max_new_per_frame=args.new, retire_after=0
        )
        alone, counts = [], []
        for frame in frames[:10]:
            start = time.perf_counter()
            counts.append(len(detector(frame)))
            alone.append(time.perf_counter() - start)
        model = vos.load_model("edgetam", checkpoint=edgetam(tmp), image_size=512, precision=args.precision)
        tracker = vos.Tracker(model, detector=detector, max_objects=64)
        tracker.add_prompt(1, mask=first_mask)
        times, detect_times, objects = [], [], []
        for frame in frames:
            before = tracker.detection.seconds
            start = time.perf_counter()
            result = tracker.step(frame)
            times.append(time.perf_counter() - start)
            detect_times.append(tracker.detection.seconds - before)
            objects.append(len(result.masks))
    print(f"machine: {cpu_description()}; {torch.get_num_threads()} threads")
    print(f"detector: {file.name if args.detector else 'YOLO11n (random weights, Ultralytics export)'} on "
          f"{args.detector_backend} {args.detector_precision}, input {detector.input_hw}, {counts} detections on the first 10 frames; alone: "
          f"median {1000 * statistics.median(alone):.1f} ms")  # fmt: skip
    print(f"tracker: EdgeTAM 512 px, PyTorch {model.precision}; detection every {args.every} frames, at most "
          f"{args.new} new object(s) each\n")  # fmt: skip
    print("frame  objects  s/frame  detector s  between (median s)  ratio")
    ratios = []
    for t in range(args.every, len(frames) - args.every + 1, args.every):  # frame 0 is the first frame: skipped
        between = statistics.median(times[t + 1 : t + args.every])
        ratios.append(times[t] / between)
        print(f"{t:5d}  {objects[t]:7d}  {times[t]:7.3f}  {detect_times[t]:10.3f}  {between:18.3f}  {ratios[-1]:5.2f}")
    print(f"\ndetection frames cost {statistics.median(ratios):.2f}x the frames between (median); frame rate on "
          f"them {100 * (1 - 1 / statistics.median(ratios)):.0f}% lower")  # fmt: skip


if __name__ == "__main__":
    main()
