"""Efficient trackers on the CPU: EdgeTAM and EfficientTAM in vos vs their reference code and vs SAM 2.1-T (Meta's
and vos's), side by side in one process.

Every model has random weights (seed 0; the object-score bias shifted so objects stay tracked) saved in its
reference's checkpoint format and loaded by vos, as the parity tests do (tests/oracles/tam_reference.py). The
references install packages all named `sam2`: Meta's is imported first, then each efficient tracker's in turn with
Meta's modules set aside (`reference_package`); the predictors built keep working side by side. Same frames, same
prompts (object 1 by its mask, others by a click); the runs are interleaved frame by frame in alternating order, so
machine noise hits them alike. Steady state = frames after the memory bank is full (frame >= num_maskmem + 1):
median seconds per frame there, frames/s, the ratio to the model's reference and to Meta's SAM 2.1-T, agreement
with the reference, GFLOP per frame and time per stage of each vos fp32 model. With the openvino extra, each vos
model also runs on OpenVINO (its graphs exported first), in fp32 and, where the CPU has it, bf16.

    python benchmarks/bench_efficient.py                               # 512 px, 1/2/4 objects
    python benchmarks/bench_efficient.py --sizes 1024 --objects 1 --compile
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]
os.environ.setdefault("TQDM_DISABLE", "1")  # the references' progress bars

import bench_speed  # noqa: E402
from bench_speed import StageClock, agreement, count_flops, cpu_description, gemm_rate, prompts_for, timed  # noqa: E402

import vos  # noqa: E402
from tests.conftest import DEFAULT_DAVIS, OBJECT_SCORE_BIAS_OFFSET, build_meta  # noqa: E402
from tests.oracles import tam_reference  # noqa: E402
from tests.video_reference import ground_truth, meta_video_predictor, write_clip  # noqa: E402
from vos.device import native_bf16  # noqa: E402
from vos.export.onnx import export_onnx  # noqa: E402

SEQUENCE = "car-shadow"
REFS = REPO / ".refs"


@contextlib.contextmanager
def reference_package(family: str):
    """While inside, `import sam2` gives `family`'s reference (from .refs/); Meta's modules come back after."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    is_sam2 = lambda name: name.split(".")[0] == "sam2"  # noqa: E731
    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if is_sam2(k)}
    GlobalHydra.instance().clear()
    paths = tam_reference.reference_env(REFS, family)["PYTHONPATH"].split(os.pathsep)
    sys.path[:0] = paths
    try:
        yield
    finally:
        del sys.path[: len(paths)]
        for k in [k for k in sys.modules if is_sam2(k)]:
            del sys.modules[k]
        sys.modules.update(saved)
        GlobalHydra.instance().clear()
        initialize_config_module("sam2", version_base="1.2")


def reference_predictor(family: str, config: str | None, size: int, tmp: Path):
    """The family's reference video predictor with random weights, and the checkpoint it saved for vos."""
    with reference_package(family):
        predictor = tam_reference.build({"family": family, "config": config, "size": size, "seed": 0})
    checkpoint = tmp / f"{config or family}.pt"
    torch.save({"model": predictor.state_dict()}, checkpoint)
    return predictor, checkpoint


def reference_run(predictor, folder: Path, prompts):
    """A reference video predictor stepping one frame per call -> (N, H, W) logits."""
    state = predictor.init_state(video_path=str(folder))
    add_points = getattr(predictor, "add_new_points_or_box", None) or predictor.add_new_points
    for obj_id, p in prompts:
        if "mask" in p:
            predictor.add_new_mask(state, frame_idx=0, obj_id=obj_id, mask=p["mask"])
        else:
            add_points(state, frame_idx=0, obj_id=obj_id, points=p["points"], labels=p["labels"])
    frames = predictor.propagate_in_video(state)
    return lambda: next(frames)[2][:, 0].float().numpy()


def vos_run(model, frames, prompts, **options):
    """vos's tracker stepping one frame per call -> (N, H, W) logits."""
    return bench_speed.vos_run(model, frames, prompts, **options)[1]


@dataclass
class Run:
    name: str
    family: str
    step: object
    reference: str | None = None  # the run this one is compared with
    clock: StageClock | None = None
    seconds: list[float] = field(default_factory=list)
    logits: list[np.ndarray] = field(default_factory=list)


def family_runs(args, family: str, config: str, checkpoint: Path, ref_step, frames, prompts, size: int, flops: dict):
    """The reference's run and vos's runs of one family: fp32 (timed per stage), bf16 where native, int8, compiled."""
    ref_name = f"{family} reference fp32"
    runs = [Run(ref_name, family, ref_step)]
    load = lambda precision: vos.load_model(config, checkpoint=checkpoint, image_size=size, precision=precision)  # noqa: E731
    fp32 = load("fp32").requires_grad_(False)  # FLOP counting hooks module inputs that need grad (parameters)
    flops[family] = count_flops(vos_run(fp32, frames, prompts), fp32.cfg.tracking.num_maskmem + 1)
    runs.append(Run(f"vos {family} fp32", family, vos_run(fp32, frames, prompts), ref_name, StageClock("cpu")))
    runs[-1].model = fp32
    if native_bf16("cpu"):
        runs.append(Run(f"vos {family} bf16", family, vos_run(load("bf16"), frames, prompts), ref_name))
    runs.append(Run(f"vos {family} int8", family, vos_run(load("int8"), frames, prompts), ref_name))
    runs += openvino_runs(config, checkpoint, fp32, size, frames, prompts, ref_name, family)
    if args.compile:
        compiled = vos_run(load("fp32"), frames, prompts, compile=True)
        runs.append(Run(f"vos {family} fp32 compiled", family, compiled, ref_name))
    return runs


def openvino_runs(config: str, checkpoint: Path, fp32, size: int, frames, prompts, reference: str, family: str) -> list:
    """The model on OpenVINO (its graphs exported beside the checkpoint): fp32, and bf16 where the CPU has it
    natively; none without the openvino extra."""
    if importlib.util.find_spec("openvino") is None:
        return []
    folder = checkpoint.with_name(f"onnx-{config}")
    if not folder.exists():
        export_onnx(fp32, folder, checkpoint=checkpoint)
    runs = []
    for precision in ("fp32", "bf16") if native_bf16("cpu") else ("fp32",):
        model = vos.load_model(config, checkpoint=checkpoint, image_size=size, backend="openvino", onnx_dir=folder,
                               precision=precision)  # fmt: skip
        runs.append(Run(f"vos {family} openvino {precision}", family, vos_run(model, frames, prompts), reference))
    return runs


def bench(args, size: int, n_objects: int, tmp: Path) -> None:
    frames = write_clip(args.davis_root, SEQUENCE, size, tmp, n=args.frames)
    prompts = prompts_for(n_objects, ground_truth(args.davis_root, SEQUENCE, 0, size), size)
    meta_model = build_meta("sam2.1_hiera_t", size)
    sd = meta_model.state_dict()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += OBJECT_SCORE_BIAS_OFFSET
    sam_ckpt = tmp / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd}, sam_ckpt)
    meta = meta_video_predictor(sam_ckpt, size)
    trained_at_512 = size == 512 and args.efficienttam in ("ti", "s")  # the pooled variants ship at 1024 only
    efficienttam = f"efficienttam_{args.efficienttam}" + ("_512x512" if trained_at_512 else "")
    edgetam_ref, edgetam_ckpt = reference_predictor("edgetam", None, size, tmp)
    eff_ref, eff_ckpt = reference_predictor("efficienttam", efficienttam, size, tmp)

    flops: dict[str, dict] = {}
    runs = [Run("meta sam2.1_t fp32", "sam2.1_hiera_t", reference_run(meta, tmp, prompts))]
    precision = "bf16" if native_bf16("cpu") else "fp32"
    sam = vos.load_model("sam2.1_hiera_t", checkpoint=sam_ckpt, image_size=size, precision=precision)
    runs.append(Run(f"vos sam2.1_t {precision}", "sam2.1_hiera_t", vos_run(sam, frames, prompts), runs[0].name))
    sam_fp32 = sam if precision == "fp32" else vos.load_model("sam2.1_hiera_t", checkpoint=sam_ckpt, image_size=size)
    runs += openvino_runs("sam2.1_hiera_t", sam_ckpt, sam_fp32, size, frames, prompts, runs[0].name, "sam2.1_t")
    runs += family_runs(args, "edgetam", "edgetam", edgetam_ckpt, reference_run(edgetam_ref, tmp, prompts), frames,
                        prompts, size, flops)  # fmt: skip
    runs += family_runs(args, "efficienttam", efficienttam, eff_ckpt, reference_run(eff_ref, tmp, prompts), frames,
                        prompts, size, flops)  # fmt: skip

    steady_from = sam.cfg.tracking.num_maskmem + 1
    with torch.inference_mode():
        for f in range(args.frames):
            for run in runs if f % 2 == 0 else runs[::-1]:
                timing = run.clock is not None and f >= steady_from
                with run.clock.attached(run.model) if timing else contextlib.nullcontext():
                    out, s = timed(run.step, "cpu")
                run.seconds.append(s)
                run.logits.append(out)

    by_name = {r.name: r for r in runs}
    median = lambda run: statistics.median(run.seconds[steady_from:])  # noqa: E731
    meta_s = median(runs[0])
    print(f"\n{size} px, {n_objects} object(s), {args.frames} frames (steady state: frames {steady_from}.."
          f"{args.frames - 1}); EfficientTAM: {efficienttam}")  # fmt: skip
    print(f"  {'run':<32} {'s/frame':>8} {'frames/s':>8} {'vs ref':>7} {'vs meta':>8}  agreement with its reference "
          "(min r, min IoU, max |d|)")  # fmt: skip
    for run in runs:
        s = median(run)
        line = f"  {run.name:<32} {s:>8.3f} {1 / s:>8.2f}"
        if run.reference:
            ref = by_name[run.reference]
            agree = [agreement(a, b) for a, b in zip(run.logits[steady_from:], ref.logits[steady_from:])]
            r, iou, d = min(a[0] for a in agree), min(a[1] for a in agree), max(a[2] for a in agree)
            line += f" {median(ref) / s:>6.2f}x {meta_s / s:>7.2f}x  {r:.5f} {iou:.4f} {d:.2e}"
        else:
            line += f" {'':>7} {meta_s / s:>7.2f}x"
        print(line)
    for family, f in flops.items():
        run = by_name[f"vos {family} fp32"]
        total_s = median(run)
        stages = {k: statistics.median(v) for k, v in run.clock.seconds.items()}
        parts = ", ".join(f"{k} {v:.3f} s / {f[k]:.1f} GFLOP" for k, v in stages.items())
        rest = total_s - sum(stages.values())
        print(f"  vos {family} fp32: {f['total']:.1f} GFLOP per frame; {parts}; "
              f"rest {rest:.3f} s / {f['rest']:.1f} GFLOP")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512])
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--frames", type=int, default=14, help="frames per run (steady from frame num_maskmem + 1)")
    parser.add_argument("--efficienttam", choices=("ti", "s", "ti_1", "ti_2", "s_1", "s_2"), default="ti",
                        help="EfficientTAM size (_1, _2: pooled memory attention)")
    parser.add_argument("--compile", action="store_true", help="also run vos's efficient models with compile=True")
    parser.add_argument("--davis-root", type=Path, default=DEFAULT_DAVIS)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; CPU: {cpu_description()}")
    print(f"native bf16: {native_bf16('cpu')}; GEMM 2048^3 fp32: {gemm_rate(torch.float32, 'cpu'):.0f} GFLOP/s")
    for size in args.sizes:
        for n_objects in args.objects:
            with tempfile.TemporaryDirectory() as tmp:
                bench(args, size, n_objects, Path(tmp))


if __name__ == "__main__":
    main()
