"""The everything mode: each model's reference SAM2AutomaticMaskGenerator (Meta's for SAM 2.1-T, EdgeTAM's own
package's for EdgeTAM) vs vos's MaskGenerator (full grid and hierarchical, fp32 and bf16 where the CPU has it
natively), side by side in one process on the same DAVIS frames.

Random weights (seed 0) with the IoU head's bias raised as in tests/test_segment.py, saved in the reference's
format and loaded by both. Random weights give ragged masks near 0 logits: the default thresholds are the tests'
relaxed ones (stability offset 0.02, threshold 0.35) so that masks are kept at all; `--meta-defaults` uses Meta's.
Meta's generator needs torchvision's NMS; the test stand-in is replaced here by vos's vectorised NMS (same greedy
rule), so that Python loops do not count against Meta. Runs alternate order image by image.

Prints per run: median seconds per image, clicks decoded, masks; ratios to Meta; for the hierarchical runs the
recall of the full mode's masks at mask IoU 0.5 and their mean best IoU.

    python benchmarks/bench_everything.py                         # both models, 512 px, 32 x 32 grid, 3 frames
    python benchmarks/bench_everything.py --models edgetam --sizes 512 1024 --points-per-side 16 --images 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from bench_efficient import reference_package  # noqa: E402
from bench_speed import cpu_description, gemm_rate, timed  # noqa: E402

import vos  # noqa: E402
from tests.conftest import DEFAULT_DAVIS, build_meta, read_frame  # noqa: E402
from tests.meta_generator import meta_generator  # noqa: E402
from tests.oracles import tam_reference  # noqa: E402
from vos.device import native_bf16  # noqa: E402
from vos.segment import MaskGenerator  # noqa: E402
from vos.segment.amg import nms  # noqa: E402

IOU_HEAD_BIAS = "sam_mask_decoder.iou_prediction_head.layers.2.bias"
IOU_BIAS = 3.0
RELAXED = {"stability_score_offset": 0.02, "stability_score_thresh": 0.35}
SEQUENCES = ("dog", "car-shadow", "blackswan", "camel", "bmx-trees", "breakdance")


def fast_meta_nms() -> None:
    """Give the reference generator a vectorised NMS in place of the test stand-in's Python loop (same results)."""
    boxes_module = sys.modules["torchvision.ops.boxes"]
    if getattr(boxes_module, "__file__", None):  # the real torchvision
        return

    def batched_nms(boxes, scores, idxs, iou_threshold):
        offset = idxs.float()[:, None] * (boxes.max() + 1)  # categories never overlap
        return nms(boxes.float() + offset, scores, iou_threshold)

    boxes_module.batched_nms = batched_nms
    sys.modules["sam2.automatic_mask_generator"].batched_nms = batched_nms


def reference(model: str, size: int, settings: dict, tmp: Path):
    """The model's reference generator on random weights (IoU bias raised), and the checkpoint vos loads."""
    if model == "sam2.1_hiera_t":
        ref = build_meta("sam2.1_hiera_t", size, seed=0)
        raise_iou_bias(ref)
        generator = meta_generator(ref.eval(), **settings)
        fast_meta_nms()
    else:
        for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:  # Meta's stand-in: timm needs more
            if not getattr(sys.modules[name], "__file__", None):
                del sys.modules[name]
        with reference_package("edgetam"):
            ref = tam_reference.build({"family": "edgetam", "size": size, "seed": 0})
            raise_iou_bias(ref)
            generator = meta_generator(ref, **settings)
            fast_meta_nms()
    checkpoint = tmp / f"{model}-{size}.pt"
    torch.save({"model": ref.state_dict()}, checkpoint)
    return generator, checkpoint


def raise_iou_bias(model) -> None:
    with torch.no_grad():
        model.state_dict()[IOU_HEAD_BIAS].add_(IOU_BIAS)


def mask_recall(full: list[dict], other: list[dict]) -> tuple[float, float]:
    """(share of `full`'s masks with a mask of `other` at IoU >= 0.5, mean best IoU) -- (1, 1) if `full` is empty."""
    if not full:
        return 1.0, 1.0
    def iou(a: np.ndarray, b: np.ndarray) -> float:
        return np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum())

    best = [max((iou(a["segmentation"], b["segmentation"]) for b in other), default=0.0) for a in full]
    return float(np.mean(np.array(best) >= 0.5)), float(np.mean(best))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["sam2.1_hiera_t", "edgetam"], choices=["sam2.1_hiera_t", "edgetam"])
    p.add_argument("--sizes", type=int, nargs="+", default=[512])
    p.add_argument("--points-per-side", type=int, default=32)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--meta-defaults", action="store_true", help="Meta's thresholds, not the relaxed ones")
    p.add_argument("--davis", type=Path, default=DEFAULT_DAVIS)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    gemm = gemm_rate(torch.float32, "cpu")
    print(f"machine: {cpu_description()}; {torch.get_num_threads()} threads; fp32 GEMM {gemm:.0f} GFLOP/s")
    settings = {"points_per_side": args.points_per_side, **({} if args.meta_defaults else RELAXED)}
    print(f"settings: {settings}")
    images = [read_frame(args.davis, s, 0) for s in SEQUENCES[: args.images]]
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for size in args.sizes:
                run_size(model, size, Path(tmp), images, settings)


def run_size(model: str, size: int, tmp: Path, images: list[np.ndarray], settings: dict) -> None:
    generator, checkpoint = reference(model, size, settings, tmp)
    runs = {"reference fp32": generator}
    precisions = ["fp32", "bf16"] if native_bf16() else ["fp32"]
    for precision in precisions:
        ours = vos.load_model(model, checkpoint=checkpoint, image_size=size, precision=precision)
        runs[f"vos {precision} full"] = MaskGenerator(ours, **settings)
        runs[f"vos {precision} hierarchical"] = MaskGenerator(ours, hierarchical=True, **settings)
    seconds = {name: [] for name in runs}
    decoded = {name: [] for name in runs}
    masks = {name: [] for name in runs}
    recall = {name: [] for name in runs}
    for i, image in enumerate(images):
        order = list(runs) if i % 2 == 0 else list(reversed(runs))
        records = {}
        for name in order:
            records[name], t = timed(lambda: runs[name].generate(image), "cpu")
            seconds[name].append(t)
            masks[name].append(len(records[name]))
            decoded[name].append(getattr(runs[name], "points_decoded", settings["points_per_side"] ** 2))
        for name in runs:
            if name.endswith("hierarchical"):
                recall[name].append(mask_recall(records[name.replace("hierarchical", "full")], records[name]))
    h, w = images[0].shape[:2]
    print(f"\n{model}, {size} px, {len(images)} images ({w}x{h}), grid {settings['points_per_side']}^2")
    base = statistics.median(seconds["reference fp32"])
    print(f"{'run':<24}{'s/image':>9}{'vs ref':>9}{'clicks':>8}{'masks':>7}{'recall@.5':>11}{'mIoU':>7}")
    for name in runs:
        med = statistics.median(seconds[name])
        r = ""
        if recall[name]:
            r = f"{np.mean([x[0] for x in recall[name]]):>11.2f}{np.mean([x[1] for x in recall[name]]):>7.2f}"
        print(f"{name:<24}{med:>9.2f}{base / med:>8.2f}x{np.mean(decoded[name]):>8.0f}{np.mean(masks[name]):>7.1f}{r}")


if __name__ == "__main__":
    main()
