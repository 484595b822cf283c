"""How a frame's time grows with the objects tracked: EdgeTAM at 512 px with 1, 2, 4 and 8 objects, PyTorch and
OpenVINO side by side in one process (trackers stepped in turn, frame by frame), median seconds per frame once the
memory bank is full, and what each object beyond the first adds.

Objects are prompted on frame 0 by boxes tiling the frame (random weights with the object-score bias shifted:
objects stay present; speed does not depend on the weights). The per-object stages (decoder, memory encoder,
memory attention) run batched over the objects in one call on both runtimes; the image encoder once a frame.

    python benchmarks/bench_objects.py [--objects 1 2 4 8] [--precision auto] [--frames 16] [--work DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_detect import edgetam  # noqa: E402
from bench_onnx_tracker import frames_of  # noqa: E402
from bench_speed import cpu_description  # noqa: E402

import vos  # noqa: E402
from tests.conftest import DEFAULT_DAVIS  # noqa: E402
from vos.export.onnx import OnnxExportSettings, export_onnx  # noqa: E402

WARMUP = 8  # frames not timed: the bank fills in 7


def boxes(n: int, h: int, w: int) -> list[tuple[float, float, float, float]]:
    """n boxes on a grid over an (h, w) frame."""
    cols = max(1, int(n**0.5 + 0.999))
    rows = (n + cols - 1) // cols
    bh, bw = h / rows, w / cols
    return [((i % cols) * bw + 4, (i // cols) * bh + 4, (i % cols + 1) * bw - 4, (i // cols + 1) * bh - 4) for i in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--precision", default="auto")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--work", type=Path, help="keep the checkpoint and the export here between runs")
    args = p.parse_args()
    frames = frames_of(DEFAULT_DAVIS, "car-shadow", args.frames)
    h, w = frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = work / "edgetam" / "edgetam-random-untrained.pt"
        if not checkpoint.exists():
            checkpoint = edgetam(work)
        if not (work / "onnx" / "manifest.json").exists():
            export_onnx(vos.load_model("edgetam", checkpoint=checkpoint, image_size=512), work / "onnx",
                        OnnxExportSettings(), checkpoint=checkpoint)  # fmt: skip
        models = {
            "PyTorch": vos.load_model("edgetam", checkpoint=checkpoint, image_size=512, precision=args.precision),
            "OpenVINO": vos.load_model("edgetam", checkpoint=checkpoint, image_size=512, precision=args.precision,
                                       backend="openvino", onnx_dir=work / "onnx"),  # fmt: skip
        }
        print(f"machine: {cpu_description()}; {torch.get_num_threads()} threads; EdgeTAM 512 px, precision "
              f"{args.precision} (PyTorch {models['PyTorch'].precision}, OpenVINO "
              f"{models['OpenVINO'].onnx_graphs.compute_precision}); {args.frames} frames, median of frames >= {WARMUP}")  # fmt: skip
        print("objects  " + "  ".join(f"{name:>18}" for name in models) + "   (s/frame, frames/s)")
        first = {}
        for n in args.objects:
            trackers = {}
            for name, model in models.items():
                trackers[name] = vos.Tracker(model, max_objects=max(16, n))
                for i, box in enumerate(boxes(n, h, w)):
                    trackers[name].add_prompt(i + 1, box=box)
            times = {name: [] for name in models}
            for t, frame in enumerate(frames):
                for name, tracker in trackers.items():
                    start = time.perf_counter()
                    tracker.step(frame)
                    if t >= WARMUP:
                        times[name].append(time.perf_counter() - start)
            medians = {name: statistics.median(ts) for name, ts in times.items()}
            first.setdefault("n", n)
            for name, m in medians.items():
                first.setdefault(name, m)
            extra = "  ".join(
                f"+{(m - first[name]) / (n - first['n']) * 1000:.0f} ms/object" if n > first["n"] else "" for name, m in medians.items()
            )  # fmt: skip
            print(f"{n:7d}  " + "  ".join(f"{m:7.3f} ({1 / m:5.2f})   " for m in medians.values()) + f"  {extra}")


if __name__ == "__main__":
    main()
