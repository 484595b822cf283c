"""Time `vos eval davis` against a straightforward evaluator written like the DAVIS toolkit.

The straightforward one follows davis2017-evaluation step by step: the whole sequence is read into
float64 arrays and split into per-object (K, T, H, W) masks, J is computed with whole-array numpy,
and F frame by frame (seg2bmap, two disk dilations, matching), with the per-frame J and F of
tests/davis_reference.py (also the tests' oracle). Its dilation is numpy (`dilate_rows`: a disk is a
union of row segments: one cumulative-sum pass per distinct segment width, then shifted ORs); if
OpenCV is importable, the toolkit's `cv2.dilate` is timed as well.

Usage: python benchmarks/bench_eval.py [--davis-root ROOT] [--results DIR] [--repeat N]
(ROOT defaults to $VOS_DAVIS_ROOT or tests/data/davis2016-val, DIR to ROOT/results/osvos).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

try:
    import cv2
except ImportError:
    cv2 = None

from vos.evaluation.davis import GLOBAL_COLUMNS, evaluate_davis
from vos.evaluation.metrics import default_threads

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.data_paths import davis_root  # noqa: E402
from tests.davis_reference import Dilate, dilate_rows, f_measure, iou  # noqa: E402

DECAY_BINS = 4
RECALL_THRESHOLD = 0.5
VOID_LABEL = 255


def dilate_cv2(b: np.ndarray, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return cv2.dilate(b.astype(np.uint8), (xx**2 + yy**2 <= radius**2).astype(np.uint8)).astype(bool)


def db_statistics(values: np.ndarray) -> tuple[float, float, float]:
    ids = (np.round(np.linspace(1, len(values), DECAY_BINS + 1) + 1e-10) - 1).astype(np.int64)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(DECAY_BINS)]
    return float(np.mean(values)), float(np.mean(values > RECALL_THRESHOLD)), float(np.mean(bins[0]) - np.mean(bins[3]))


def read_all(folder: Path, frames: list[str]) -> np.ndarray:
    first = np.array(Image.open(folder / f"{frames[0]}.png"))
    out = np.zeros((len(frames), *first.shape))
    for i, frame in enumerate(frames):
        out[i] = np.array(Image.open(folder / f"{frame}.png"))
    return out


def split_objects(masks: np.ndarray, n_objects: int) -> np.ndarray:
    ids = np.ones((n_objects, *masks.shape)) * np.arange(1, n_objects + 1)[:, None, None, None]
    return ids == masks[None]


def straightforward(root: Path, results: Path, sequences: list[str], dilate: Dilate) -> dict[str, float]:
    """The toolkit's loop: per sequence, per object, J over all frames at once and F frame by frame."""
    stats: dict[str, list[tuple[float, float, float]]] = {"J": [], "F": []}
    for seq in sequences:
        frames = sorted(p.stem for p in (root / "Annotations/480p" / seq).glob("*.png"))
        gt = read_all(root / "Annotations/480p" / seq, frames)
        if set(np.unique(gt[0])) <= {0, VOID_LABEL}:
            gt = (gt == VOID_LABEL).astype(np.float64)  # DAVIS 2016: 0/255 is object 1
        gt[gt == VOID_LABEL] = 0
        n_objects = int(gt[0].max())
        gt_masks = split_objects(gt, n_objects)[:, 1:-1]
        res_masks = split_objects(read_all(results / seq, frames[1:-1]), n_objects)
        for k in range(n_objects):
            j = iou(gt_masks[k], res_masks[k])
            f = np.array([f_measure(res_masks[k, t], gt_masks[k, t], dilate) for t in range(len(j))])
            stats["J"].append(db_statistics(j))
            stats["F"].append(db_statistics(f))
    j_m, j_r, j_d = np.mean(stats["J"], axis=0)
    f_m, f_r, f_d = np.mean(stats["F"], axis=0)
    return dict(zip(GLOBAL_COLUMNS, ((j_m + f_m) / 2, j_m, j_r, j_d, f_m, f_r, f_d)))


def timed(fn: Callable[[], dict[str, float]], repeat: int) -> tuple[float, dict[str, float]]:
    best, out = math.inf, {}
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis-root", type=Path, default=davis_root())
    parser.add_argument("--results", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="runs of our evaluator; the best is reported")
    args = parser.parse_args()
    root, results = args.davis_root, args.results or args.davis_root / "results/osvos"
    sequences = sorted(p.name for p in results.iterdir() if p.is_dir())
    n_frames = sum(len(list((root / "Annotations/480p" / s).glob("*.png"))) - 2 for s in sequences)
    print(f"{len(sequences)} sequences, {n_frames} scored frames, {default_threads()} CPUs")

    start = time.perf_counter()
    evaluate_davis(root, results, sequences=sequences[:1])
    print(f"first call (numba compile or cache load, one sequence): {time.perf_counter() - start:.2f} s")

    def ours(threads: int | None) -> Callable[[], dict[str, float]]:
        return lambda: evaluate_davis(root, results, sequences=sequences, threads=threads).global_scores()

    rows = [("vos eval davis (all CPUs)", *timed(ours(None), args.repeat))]
    rows.append(("vos eval davis (1 thread)", *timed(ours(1), args.repeat)))
    baselines: list[tuple[str, Dilate]] = [("straightforward, numpy dilation", dilate_rows)]
    if cv2 is not None:
        baselines.append(("straightforward, cv2.dilate", dilate_cv2))
    else:
        print("(OpenCV not installed: the toolkit's cv2.dilate variant is not timed)")
    for name, dilate in baselines:
        rows.append((name, *timed(lambda d=dilate: straightforward(root, results, sequences, d), 1)))

    reference = rows[0][2]
    ours_seconds = rows[0][1]
    print(f"\n{'evaluator':<34}{'seconds':>9}{'frames/s':>10}{'x ours':>8}  max |diff| vs ours")
    for name, seconds, scores in rows:
        diff = max(abs(scores[c] - reference[c]) for c in GLOBAL_COLUMNS)
        print(f"{name:<34}{seconds:>9.3f}{n_frames / seconds:>10.0f}{seconds / ours_seconds:>8.1f}  {diff:.1e}")
    print("\n" + "  ".join(f"{c} {reference[c]:.4f}" for c in GLOBAL_COLUMNS))


if __name__ == "__main__":
    main()
