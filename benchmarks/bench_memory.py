"""Memory (RSS) and time per frame over a long video: vos.Tracker and vos.VideoSession vs Meta's video predictor.

Meta's `SAM2VideoPredictor` loads every frame into RAM (float32, S x S) and keeps every
frame's output; our tracker keeps a bounded memory bank and our offline session keeps
per-frame records on disk. Each contender runs in a subprocess of this script on the same
frames (a DAVIS sequence cycled to --frames frames, S x S JPEGs) and the same random
weights; RSS is sampled as frames go by. Prints RSS at the start, after warm-up and at the end, growth per 100
frames after warm-up, seconds per frame, and ratios to Meta (no pass/fail).

    python benchmarks/bench_memory.py [--frames 300] [--size 512] [--sequence car-shadow]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import DEFAULT_DAVIS, OBJECT_SCORE_BIAS_OFFSET, build_meta  # noqa: E402

CONTENDERS = ("meta", "tracker", "session")
SAMPLE_EVERY = 25
WARMUP_FRAMES = 10  # RSS growth is measured from here, after allocator warm-up


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def prepare(folder: Path, davis: Path, sequence: str, n: int, size: int) -> None:
    """n S x S JPEG frames cycling through the sequence, its first annotation, and random weights."""
    sources = sorted((davis / "JPEGImages" / "480p" / sequence).glob("*.jpg"))
    frames = folder / "frames"
    frames.mkdir()
    for i in range(n):
        Image.open(sources[i % len(sources)]).convert("RGB").resize((size, size), Image.BICUBIC).save(
            frames / f"{i:05d}.jpg", quality=95
        )
    gt = Image.open(davis / "Annotations" / "480p" / sequence / "00000.png").resize((size, size), Image.NEAREST)
    np.save(folder / "mask.npy", np.array(gt) > 0)
    sd = build_meta("sam2.1_hiera_t", size).state_dict()
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += OBJECT_SCORE_BIAS_OFFSET  # objects present
    torch.save({"model": sd}, folder / "weights.pt")


def worker(kind: str, folder: Path, size: int) -> None:
    """Run one contender, printing one JSON line per sample: frame, rss_mb, seconds since the first frame."""
    mask = np.load(folder / "mask.npy")
    start = rss_mb()
    print(json.dumps({"frame": -1, "rss_mb": start, "seconds": 0.0}), flush=True)
    with torch.inference_mode():
        if kind == "meta":
            from sam2.build_sam import build_sam2_video_predictor

            overrides = [f"++model.image_size={size}"] if size != 1024 else []
            meta = build_sam2_video_predictor(
                "configs/sam2.1/sam2.1_hiera_t.yaml", str(folder / "weights.pt"), device="cpu",
                hydra_overrides_extra=overrides,
            )
            meta.fill_hole_area = 0
            state = meta.init_state(video_path=str(folder / "frames"))
            meta.add_new_mask(state, frame_idx=0, obj_id=1, mask=mask)
            frames = (f for f, _, _ in meta.propagate_in_video(state))
        else:
            import vos
            from vos.streams.sources.frame_folder import FrameFolder

            model = vos.load_model("sam2.1_hiera_t", checkpoint=folder / "weights.pt", image_size=size)
            source = FrameFolder(folder / "frames")
            if kind == "tracker":
                tracker = vos.Tracker(model, fill_hole_area=0)
                tracker.add_prompt(1, mask=mask)
                frames = (tracker.step(frame).frame_index for frame in source)
            else:
                session = vos.VideoSession(model, source, fill_hole_area=0, store_dir=folder)
                session.add_prompt(0, 1, mask=mask)
                frames = (r.frame_index for r in session.propagate())
        t0 = None
        for f in frames:
            if t0 is None:
                t0 = time.perf_counter()
            if f % SAMPLE_EVERY == 0 or f == WARMUP_FRAMES:
                print(json.dumps({"frame": f, "rss_mb": rss_mb(), "seconds": time.perf_counter() - t0}), flush=True)
        print(json.dumps({"frame": f, "rss_mb": rss_mb(), "seconds": time.perf_counter() - t0}), flush=True)


def run(kind: str, folder: Path, size: int) -> list[dict]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--dir", str(folder), "--size", str(size)],
        check=True, capture_output=True, text=True,
    )
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, choices=(512, 1024))
    parser.add_argument("--sequence", default="car-shadow")
    parser.add_argument("--davis-root", type=Path, default=DEFAULT_DAVIS)
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.dir, args.size)
        return
    if args.frames <= WARMUP_FRAMES:
        parser.error(f"--frames must be more than {WARMUP_FRAMES}")

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, sam2.1_hiera_t at {args.size} px, "
          f"{args.frames} frames of {args.sequence}, one object")
    print(f"{'':>10} {'RSS start':>10} {'RSS @' + str(WARMUP_FRAMES):>9} {'RSS end':>9} {'MB/100 fr':>10} {'s/frame':>8}")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prepare(folder, args.davis_root, args.sequence, args.frames, args.size)
        for kind in args.only:
            samples = run(kind, folder, args.size)
            warm = next(s for s in samples if s["frame"] == WARMUP_FRAMES)
            end = samples[-1]
            growth = (end["rss_mb"] - warm["rss_mb"]) / (end["frame"] - WARMUP_FRAMES) * 100
            per_frame = (end["seconds"] - warm["seconds"]) / (end["frame"] - WARMUP_FRAMES)
            rows[kind] = end["rss_mb"] - samples[0]["rss_mb"], per_frame
            print(f"{kind:>10} {samples[0]['rss_mb']:>10.0f} {warm['rss_mb']:>9.0f} {end['rss_mb']:>9.0f} "
                  f"{growth:>10.1f} {per_frame:>8.2f}")
    if "meta" in rows:
        for kind in ("tracker", "session"):
            if kind in rows:
                print(f"{kind}/meta: RSS above start {rows[kind][0] / rows['meta'][0]:.2f}x, "
                      f"time per frame {rows[kind][1] / rows['meta'][1]:.2f}x")


if __name__ == "__main__":
    main()
