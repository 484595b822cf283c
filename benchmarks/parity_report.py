"""Max abs differences between vos and Meta's sam2 (1.1.0), per component and image size.

Same random weights (saved in Meta's format, loaded through vos.load_model), same DAVIS frames.
The tests assert the tolerances; this prints the numbers.

    python benchmarks/parity_report.py [--config sam2.1_hiera_t] [--sizes 1024 512]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import vos  # noqa: E402
from tests.conftest import DEFAULT_DAVIS, build_meta, read_frame, save_meta_checkpoint  # noqa: E402
from tests.meta_reference import meta_image_features, meta_predict  # noqa: E402
from vos.tracking.transforms import preprocess_image  # noqa: E402

FRAMES = [("blackswan", 0), ("dog", 10), ("kite-surf", 20)]
PROMPTS = {
    "point": dict(point_coords=np.array([[420.0, 240.0]]), point_labels=np.array([1])),
    "2 points + negative": dict(point_coords=np.array([[420.0, 240.0], [380.0, 260.0], [30.0, 30.0]]), point_labels=np.array([1, 1, 0])),
    "box": dict(box=np.array([300.0, 150.0, 560.0, 380.0])),
    "box + point": dict(box=np.array([300.0, 150.0, 560.0, 380.0]), point_coords=np.array([[420.0, 240.0]]), point_labels=np.array([1])),
}


def diff(a, b) -> float:
    a = torch.as_tensor(np.asarray(a, dtype=np.float32)) if not torch.is_tensor(a) else a.float()
    b = torch.as_tensor(np.asarray(b, dtype=np.float32)) if not torch.is_tensor(b) else b.float()
    return (a - b).abs().max().item()


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="sam2.1_hiera_t")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 512])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            meta = build_meta(args.config, size).eval()
            ours = vos.load_model(args.config, checkpoint=save_meta_checkpoint(meta, Path(tmp) / "w.pt"), image_size=size)
            worst: dict[str, float] = {}
            for seq, idx in FRAMES:
                image = read_frame(DEFAULT_DAVIS, seq, idx)
                ref = meta_image_features(meta, preprocess_image(image, size))
                predictor = vos.ImagePredictor(ours)
                predictor.set_image(image)
                rows = {"image_embed": diff(predictor._features["image_embed"], ref["image_embed"])}
                for level, (a, b) in enumerate(zip(predictor._features["high_res_feats"], ref["high_res_feats"])):
                    rows[f"high_res_feats[{level}]"] = diff(a, b)
                for name, kwargs in PROMPTS.items():
                    for multimask in (True, False):
                        masks, ious, low = predictor.predict(**kwargs, multimask_output=multimask, return_logits=True)
                        r_masks, r_ious, r_low = meta_predict(meta, ref, image.shape[:2], **kwargs, multimask_output=multimask)
                        tag = f"{name} ({'multi' if multimask else 'single'})"
                        rows[f"low-res logits, {tag}"] = diff(low, r_low)
                        rows[f"IoU, {tag}"] = diff(ious, r_ious)
                        rows[f"full-res logits, {tag}"] = diff(masks, r_masks)
                for key, value in rows.items():
                    worst[key] = max(worst.get(key, 0.0), value)
            print(f"\n{args.config} at {size} px, max |vos - meta| over {len(FRAMES)} DAVIS frames")
            for key, value in worst.items():
                print(f"  {key:48s} {value:.2e}")


if __name__ == "__main__":
    main()
