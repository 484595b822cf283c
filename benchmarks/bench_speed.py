"""Tracking speed: Meta's video predictor vs vos (fp32, fp32 compiled, bf16), side by side in one process.

Same random weights (the object-score bias shifted so objects stay tracked), same frames,
same prompts. The runs are interleaved frame by frame, so machine noise hits them alike.
Steady state = frames after the memory bank is full (frame >= num_maskmem + 1); the median
seconds per frame there, the ratio to Meta, the achieved GFLOP/s next to this machine's
measured GEMM and SDPA rates, the time per stage, and how bf16 agrees with fp32.

    python benchmarks/bench_speed.py                                   # 512 px, 1/2/4 objects, CPU
    python benchmarks/bench_speed.py --sizes 512 1024 --objects 2 --compile
    python benchmarks/bench_speed.py --device cuda --compile           # on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import vos  # noqa: E402
from tests.conftest import DEFAULT_DAVIS, OBJECT_SCORE_BIAS_OFFSET, build_meta  # noqa: E402
from tests.video_reference import ground_truth, meta_video_predictor, write_clip  # noqa: E402
from vos.device import native_bf16  # noqa: E402
from vos.tracking.stages import stages  # noqa: E402

SEQUENCE = "car-shadow"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


# -- machine probes ------------------------------------------------------------------------------
def cpu_description() -> str:
    flags = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        "unknown CPU",
    ) if Path("/proc/cpuinfo").exists() else "unknown CPU"
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return f"{model}; {', '.join(isa) or 'no AVX2'}; torch ISA {torch.backends.cpu.get_cpu_capability()}"


def gemm_rate(dtype: torch.dtype, device: str, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n x n matmul (the best of `repeats`)."""
    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = min(timed(lambda: a @ b, device)[1] for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def sdpa_rate(dtype: torch.dtype, device: str, batch: int, n_q: int, n_k: int, dim: int, repeats: int = 3) -> float:
    """GFLOP/s of scaled_dot_product_attention of the given shape (one head)."""
    q = torch.randn(batch, 1, n_q, dim, device=device).to(dtype)
    k = torch.randn(batch, 1, n_k, dim, device=device).to(dtype)
    F.scaled_dot_product_attention(q, k, k)
    best = min(timed(lambda: F.scaled_dot_product_attention(q, k, k), device)[1] for _ in range(repeats))
    return 4 * batch * n_q * n_k * dim / best / 1e9


# -- stage timing --------------------------------------------------------------------------------
@dataclass
class StageClock:
    """Wall time per stage of a vos tracker step (wrapping the stages its segmenter calls, `vos.tracking.stages.Stages`)."""

    device: str
    seconds: dict[str, list[float]] = field(default_factory=dict)

    STAGES = {"forward_image": "image encoder", "memory_attention": "memory attention"}

    @contextlib.contextmanager
    def attached(self, model):
        model = stages(model)
        originals = {name: getattr(model, name) for name in self.STAGES}

        def wrap(name, fn):
            def run(*args, **kwargs):
                out, s = timed(lambda: fn(*args, **kwargs), self.device)
                self.seconds.setdefault(self.STAGES[name], []).append(s)
                return out
            return run

        for name, fn in originals.items():
            setattr(model, name, wrap(name, fn))
        try:
            yield self
        finally:
            for name, fn in originals.items():
                setattr(model, name, fn)


def count_flops(step, warmup: int) -> dict[str, float]:
    """GFLOP of a tracking loop's frame after `warmup` frames, per stage (SDPA through the math backend, which the counter sees)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode():
        for _ in range(warmup):
            step()
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            step()
    per_module = {k: sum(v.values()) / 1e9 for k, v in counter.get_flop_counts().items()}
    total = counter.get_total_flops() / 1e9
    encoder, attention = per_module.get("ImageEncoder", 0.0), per_module.get("MemoryAttention", 0.0)
    return {"total": total, "image encoder": encoder, "memory attention": attention, "rest": total - encoder - attention}


# -- runs ------------------------------------------------------------------------------------------
@dataclass
class Run:
    name: str
    step: object  # frame index -> (N, H, W) logits as numpy
    seconds: list[float] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)


def prompts_for(n_objects: int, gt: np.ndarray, size: int) -> list[tuple[int, dict]]:
    """Object 1: the ground-truth mask; others: one click each at spread-out places."""
    out = [(1, {"mask": gt})]
    clicks = [(0.2, 0.8), (0.8, 0.2), (0.5, 0.15), (0.15, 0.4)]
    for k in range(1, n_objects):
        x, y = clicks[k - 1]
        out.append((k + 1, {"points": np.array([[size * x, size * y]], np.float32), "labels": np.array([1], np.int32)}))
    return out


def meta_run(checkpoint: Path, folder: Path, size: int, prompts, device: str, bf16: bool = False):
    """Meta's video predictor, one frame per call; `bf16`: under bfloat16 autocast, as Meta's GPU examples run it."""
    meta = meta_video_predictor(checkpoint, size, device)
    state = meta.init_state(video_path=str(folder))
    for obj_id, p in prompts:
        if "mask" in p:
            meta.add_new_mask(state, frame_idx=0, obj_id=obj_id, mask=p["mask"])
        else:
            meta.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, points=p["points"], labels=p["labels"])
    frames = meta.propagate_in_video(state)

    def step():
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            return next(frames)[2][:, 0].float().cpu().numpy()

    return step


def vos_run(model, frames, prompts, **options):
    tracker = vos.Tracker(model, fill_hole_area=0, **options)
    for obj_id, p in prompts:
        tracker.add_prompt(obj_id, **p)
    it = iter(frames)

    def step():
        r = tracker.step(next(it))
        return np.stack([r.logits[i] for i in sorted(r.logits)])

    return tracker, step


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Worst over objects: Pearson r of the logits, IoU of the masks at 0, max |a - b|."""
    rs, ious = [], []
    for x, y in zip(a, b):
        rs.append(float(np.corrcoef(x.ravel(), y.ravel())[0, 1]))
        inter, union = np.logical_and(x > 0, y > 0).sum(), np.logical_or(x > 0, y > 0).sum()
        ious.append(1.0 if union == 0 else inter / union)
    return min(rs), min(ious), float(np.abs(a - b).max())


def bench(args, size: int, n_objects: int, tmp: Path, peaks: dict, medians: dict) -> None:
    """One size and object count: every run side by side; vos fp32's steady-state median goes into `medians`."""
    frames = write_clip(args.davis_root, SEQUENCE, size, tmp, n=args.frames)
    gt = ground_truth(args.davis_root, SEQUENCE, 0, size)
    prompts = prompts_for(n_objects, gt, size)
    meta_model = build_meta("sam2.1_hiera_t", size)
    sd = meta_model.state_dict()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += OBJECT_SCORE_BIAS_OFFSET
    checkpoint = tmp / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd}, checkpoint)

    runs = [Run("meta fp32", meta_run(checkpoint, tmp, size, prompts, args.device))]
    if args.device.startswith("cuda"):
        runs.append(Run("meta bf16 autocast", meta_run(checkpoint, tmp, size, prompts, args.device, bf16=True)))
    fp32 = vos.load_model("sam2.1_hiera_t", checkpoint=checkpoint, image_size=size, device=args.device, precision="fp32")
    tracker, step = vos_run(fp32, frames, prompts)
    runs.append(Run("vos fp32", step))
    clock = StageClock(args.device)
    if args.compile:
        compiled = vos.load_model("sam2.1_hiera_t", checkpoint=checkpoint, image_size=size, device=args.device, precision="fp32")
        runs.append(Run("vos fp32 compiled", vos_run(compiled, frames, prompts, compile=True)[1]))
    use_bf16 = args.force_bf16 or native_bf16(args.device)
    if use_bf16:
        bf16 = vos.load_model("sam2.1_hiera_t", checkpoint=checkpoint, image_size=size, device=args.device, precision="bf16")
        runs.append(Run("vos bf16", vos_run(bf16, frames, prompts)[1]))
        if args.compile:
            bf16c = vos.load_model("sam2.1_hiera_t", checkpoint=checkpoint, image_size=size, device=args.device, precision="bf16")
            runs.append(Run("vos bf16 compiled", vos_run(bf16c, frames, prompts, compile=True)[1]))

    steady_from = fp32.cfg.tracking.num_maskmem + 1
    # The model's FLOPs per frame as Meta computes them (the rate every run is given in), and vos's own per stage.
    model_flops = count_flops(meta_run(checkpoint, tmp, size, prompts, args.device), steady_from)["total"]
    flops = count_flops(vos_run(fp32, frames, prompts)[1], steady_from)
    with torch.inference_mode():
        for f in range(args.frames):
            for run in runs if f % 2 == 0 else runs[::-1]:
                ctx = clock.attached(fp32) if run.name == "vos fp32" and f >= steady_from else contextlib.nullcontext()
                with ctx:
                    out, s = timed(run.step, args.device)
                run.seconds.append(s)
                run.logits.append(out)

    meta_s = statistics.median(runs[0].seconds[steady_from:])
    print(f"\n{size} px, {n_objects} object(s), {args.frames} frames (steady state: frames {steady_from}..{args.frames - 1})")
    print(f"  {'run':<20} {'s/frame':>8} {'vs meta':>8} {'GFLOP/s':>8} {'of peak':>8}  agreement with vos fp32 (min r, min IoU, max |d|)")
    vos_fp32 = next(r for r in runs if r.name == "vos fp32")
    medians[(size, n_objects)] = statistics.median(vos_fp32.seconds[steady_from:])
    for run in runs:
        s = statistics.median(run.seconds[steady_from:])
        dtype = "bf16" if "bf16" in run.name else "fp32"
        rate = model_flops / s
        agree = [agreement(a, b) for a, b in zip(run.logits[steady_from:], vos_fp32.logits[steady_from:])]
        r, iou, d = min(a[0] for a in agree), min(a[1] for a in agree), max(a[2] for a in agree)
        print(
            f"  {run.name:<20} {s:>8.3f} {meta_s / s:>7.2f}x {rate:>8.1f} {rate / peaks[dtype]:>7.0%}  "
            f"{r:.5f} {iou:.4f} {d:.2e}"
        )
    print(f"  GFLOP/s above: the model's {model_flops:.1f} GFLOP per frame as Meta computes it, per second")
    print(f"  vos fp32 per stage (vos's own GFLOP per frame: total {flops['total']:.1f}):")
    for stage in ("image encoder", "memory attention"):
        s = statistics.median(clock.seconds[stage])
        print(f"    {stage:<18} {s:>7.3f} s  {flops[stage]:>6.1f} GFLOP  {flops[stage] / s:>6.1f} GFLOP/s")
    rest = medians[(size, n_objects)] - sum(statistics.median(v) for v in clock.seconds.values())
    print(f"    {'decoder + mem enc':<18} {rest:>7.3f} s  {flops['rest']:>6.1f} GFLOP  {flops['rest'] / rest:>6.1f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=14, help="frames per run (steady state from frame num_maskmem + 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", action="store_true", help="also run vos with compile=True")
    parser.add_argument("--force-bf16", action="store_true", help="run bf16 even where the hardware has no native bf16")
    parser.add_argument("--davis-root", type=Path, default=DEFAULT_DAVIS)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU: {cpu_description()}")
    print(f"native bf16 on {args.device}: {native_bf16(args.device)}")
    peaks = {"fp32": gemm_rate(torch.float32, args.device)}
    if args.force_bf16 or native_bf16(args.device):
        peaks["bf16"] = gemm_rate(torch.bfloat16, args.device)
    print("GEMM 2048^3: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()))
    medians: dict[tuple[int, int], float] = {}
    for size in args.sizes:
        n = (size // 16) ** 2
        mem = 7 * n + 64
        rates = {k: sdpa_rate(torch.float32 if k == "fp32" else torch.bfloat16, args.device, 2, n, mem, 256) for k in peaks}
        print(f"SDPA (2, 1, {n} x {mem}, 256) at {size} px: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()))
        for n_objects in args.objects:
            with tempfile.TemporaryDirectory() as tmp:
                bench(args, size, n_objects, Path(tmp), peaks, medians)
        if (size, 1) in medians and (size, 4) in medians:
            print(f"\n{size} px: vos fp32 with 4 objects costs {medians[(size, 4)] / medians[(size, 1)]:.2f}x one object per frame")


if __name__ == "__main__":
    main()
