"""The tracker on ONNX Runtime (fp32 and int8 graphs), with `backend="auto"` (per stage the faster runtime, as
measured at load), and on OpenVINO (fp32; static int8 image encoder; bf16 where the CPU has it natively) vs PyTorch
eager (fp32; bf16 where native; compiled with `--compile`), side by side in one process: the same native-size DAVIS frames, the trackers
stepped in turn, frame by frame.

Prints, per run, the median seconds per frame once the memory bank is full (frames after `--warmup`), the
milliseconds per frame of each stage (image encoder, memory attention, decoder, memory encoder; not for compiled
runs), and how each run's masks agree with PyTorch fp32's: the largest logit difference, the per-frame Pearson r of
the logits (lowest frame) and the mask IoU (lowest frame). Random weights (SAM 2.1-T unless `--model`) with the
object-score bias shifted (objects stay present; speed does not depend on the weights).

    python benchmarks/bench_onnx_tracker.py                            # 512 px, 1 object
    python benchmarks/bench_onnx_tracker.py --image-size 1024 --objects 2 --work /tmp/onnx-bench
    python benchmarks/bench_onnx_tracker.py --model edgetam
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_speed import cpu_description, gemm_rate  # noqa: E402
from PIL import Image  # noqa: E402

import vos  # noqa: E402
from vos.build import save_random_checkpoint  # noqa: E402
from vos.export.onnx import OnnxExportSettings, export_onnx  # noqa: E402

STAGES = ("encode_images", "condition", "decode", "encode_memory")


def frames_of(davis: Path, sequence: str, n: int) -> list[np.ndarray]:
    paths = sorted((davis / "JPEGImages" / "480p" / sequence).glob("*.jpg"))[:n]
    if len(paths) < n:
        raise SystemExit(f"{sequence} has {len(paths)} frames under {davis}, {n} asked for")
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def time_stages(tracker: vos.Tracker, totals: dict[str, float]) -> None:
    """Add each stage call's seconds to `totals` (wrapping the tracker's stages object)."""
    stages = tracker.segmenter.stages
    for name in STAGES:
        call = getattr(stages, name)

        def timed(*args, _call=call, _name=name, **kwargs):
            start = time.perf_counter()
            out = _call(*args, **kwargs)
            totals[_name] += time.perf_counter() - start
            return out

        setattr(stages, name, timed)


def export(name: str, checkpoint: Path, image_size: int, folder: Path, precision: str) -> Path:
    if not (folder / "manifest.json").is_file():
        model = vos.load_model(name, checkpoint=checkpoint, image_size=image_size)
        start = time.perf_counter()
        export_onnx(model, folder, OnnxExportSettings(precision=precision), checkpoint=checkpoint)
        print(f"exported {precision} in {time.perf_counter() - start:.0f} s", flush=True)
    return folder


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX): the bf16 runs are added then."""
    flags = Path("/proc/cpuinfo").read_text().split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sam2.1_hiera_t", help="a config ONNX export covers (edgetam, ...)")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=8, help="frames not timed (the bank fills in 7)")
    parser.add_argument("--compile", action="store_true", help="add PyTorch compiled (minutes of compilation)")
    parser.add_argument("--davis", type=Path, default=REPO.parent / "shared" / "datasets" / "davis2016-val")
    parser.add_argument("--sequence", default="car-shadow")
    parser.add_argument("--work", type=Path, help="keep the checkpoint and exports here between runs")
    args = parser.parse_args()

    frames = frames_of(args.davis, args.sequence, args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        checkpoint = work / f"{args.model}-random.pt"
        if not checkpoint.is_file():
            save_random_checkpoint(args.model, checkpoint)
        size = args.image_size
        folders = {
            p: export(args.model, checkpoint, size, work / f"onnx-{args.model}-{size}-{p}", p) for p in ("fp32", "int8")
        }

        def load(**kw):
            return vos.load_model(args.model, checkpoint=checkpoint, image_size=size, **kw)

        runs = {
            "PyTorch eager": vos.Tracker(load()),
            "ORT fp32": vos.Tracker(load(backend="onnxruntime", onnx_dir=folders["fp32"])),
            "ORT int8": vos.Tracker(load(backend="onnxruntime", onnx_dir=folders["int8"], precision="int8")),
        }
        start = time.perf_counter()
        auto = load(backend="auto", onnx_dir=folders["fp32"])
        used = sorted(auto.onnx_graphs.used) if auto.onnx_graphs is not None else []
        chosen = ", ".join(used) or "nothing"
        print(f"auto measured in {time.perf_counter() - start:.0f} s; ONNX Runtime runs: {chosen}")
        runs["auto (fp32)"] = vos.Tracker(auto)
        if native_bf16():
            runs["PyTorch bf16"] = vos.Tracker(load(precision="bf16"))
        if importlib.util.find_spec("openvino") is not None:
            runs["OpenVINO fp32"] = vos.Tracker(load(backend="openvino", onnx_dir=folders["fp32"]))
            runs["OpenVINO int8"] = vos.Tracker(load(backend="openvino", onnx_dir=folders["fp32"], precision="int8"))
            if native_bf16():
                runs["OpenVINO bf16"] = vos.Tracker(load(backend="openvino", onnx_dir=folders["fp32"], precision="bf16"))
        if args.compile:
            runs["PyTorch compiled"] = vos.Tracker(load(), compile=True)
        stage_totals = {name: defaultdict(float) for name in runs}
        h, w = frames[0].shape[:2]
        for tracker in runs.values():
            for o in range(args.objects):
                x = w * (0.3 + 0.4 * o / max(1, args.objects - 1))
                tracker.add_prompt(o + 1, points=[[x, h * 0.6]], labels=[1])
        seconds = {name: [] for name in runs}
        results = {name: [] for name in runs}
        for i, frame in enumerate(frames):
            if i == args.warmup:
                for name, tracker in runs.items():
                    if name != "PyTorch compiled":
                        time_stages(tracker, stage_totals[name])
            for name, tracker in runs.items():
                start = time.perf_counter()
                results[name].append(tracker.step(frame))
                if i >= args.warmup:
                    seconds[name].append(time.perf_counter() - start)

    timed_frames = args.frames - args.warmup
    print(f"machine: {cpu_description()}; {torch.get_num_threads()} threads; "
          f"fp32 GEMM {gemm_rate(torch.float32, 'cpu'):.0f} GFLOP/s")  # fmt: skip
    print(f"{args.model}, {size} px, {args.objects} object(s), {args.sequence} {w}x{h}; median of {timed_frames} "
          f"frames "
          f"after {args.warmup}; runs stepped in turn")  # fmt: skip
    base = statistics.median(seconds["PyTorch eager"])
    want = results["PyTorch eager"]
    for name in runs:
        median = statistics.median(seconds[name])
        stages = " ".join(f"{k} {v / timed_frames * 1e3:.0f}" for k, v in stage_totals[name].items()) or "-"
        got = results[name]
        diff = max(float(np.abs(g.logits[o] - r.logits[o]).max()) for g, r in zip(got, want) for o in r.logits)
        r_min = min(pearson(g.logits[o], r.logits[o]) for g, r in zip(got, want) for o in r.logits)
        iou = min(
            (g.masks[o] & r.masks[o]).sum() / max(1, (g.masks[o] | r.masks[o]).sum())
            for g, r in zip(got, want)
            for o in r.masks
        )
        print(f"{name:17s} {median:6.3f} s/frame ({base / median:.2f}x) | ms/frame: {stages} | vs PyTorch fp32: "
              f"max |d logit| {diff:.1e}, min r {r_min:.4f}, min IoU {iou:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
