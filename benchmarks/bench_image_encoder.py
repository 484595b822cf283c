"""Image encoder time: vos vs Meta's sam2 (1.1.0) on the same weights and the same DAVIS frame.

Both models run in this one process, alternating, so machine load affects both alike.
Prints the median time per frame of each and the ratio (no pass/fail).

    python benchmarks/bench_image_encoder.py [--config sam2.1_hiera_t] [--sizes 1024 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import vos  # noqa: E402
from tests.conftest import DEFAULT_DAVIS, build_meta, save_meta_checkpoint  # noqa: E402
from vos.tracking.transforms import preprocess_image  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sam2.1_hiera_t")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frame", type=Path, default=DEFAULT_DAVIS / "JPEGImages/480p/blackswan/00000.jpg")
    args = parser.parse_args()

    image = np.array(Image.open(args.frame).convert("RGB"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.config}, frame {args.frame.name} {image.shape}")
    print(f"{'size':>6} {'meta s/frame':>13} {'vos s/frame':>12} {'vos/meta':>9} {'max |diff|':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            meta = build_meta(args.config, size).eval()
            ckpt = save_meta_checkpoint(meta, Path(tmp) / "w.pt")
            ours = vos.load_model(args.config, checkpoint=ckpt, image_size=size)
            x = preprocess_image(image, size)
            with torch.inference_mode():
                meta.forward_image(x), ours.forward_image(x)  # warm-up
                meta_t, ours_t = [], []
                for _ in range(args.repeats):
                    meta_t += timed(lambda: meta.forward_image(x), 1)
                    ours_t += timed(lambda: ours.forward_image(x), 1)
                diff = (meta.forward_image(x)["vision_features"] - ours.forward_image(x).features[-1]).abs().max().item()
            m, o = statistics.median(meta_t), statistics.median(ours_t)
            print(f"{size:>6} {m:>13.3f} {o:>12.3f} {o / m:>9.3f} {diff:>11.2e}")


if __name__ == "__main__":
    main()
