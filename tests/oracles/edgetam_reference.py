"""EdgeTAM's reference code (PyPI `edgetam-dimos==1.0.1`) as a test oracle, run in a process of its own.

The reference installs a package named `sam2`, as Meta's does, so it runs here with PYTHONPATH holding its
folder, timm's and the torchvision stand-in first (`reference_env`), never beside Meta's `sam2`.

    python tests/oracles/edgetam_reference.py SPEC.json

SPEC: {"out": folder, "size": 512 | 1024, "seed": 0, "frames": folder of S x S JPEGs (or null),
"mask": .npy bool mask of object 1 on frame 0, "click": [[x, y]] (object 2), "correction_frame": k,
"corrections": {obj_id: {"points": [[x, y], ...], "labels": [...]}}} (clicks on frame k). Writes to `out`:
- `edgetam.pt`: the random weights in the reference's checkpoint format ({"model": state_dict}); every batch
  norm's statistics and affine parameters are randomized (timm initializes them to the identity, and RepViT's
  MLP output norm to zero, which would hide whole branches from the comparison), and the object-score head's
  bias is shifted so that tracked objects are present (as the SAM 2 tests do);
- `reference.npz`: `image` (1, 3, S, S) input, the backbone's `fpn_i` / `pos_i` levels for it, the spatial
  perceiver's `perceiver_in` (2, C_mem, E, E) -> `perceiver_out`, `perceiver_pos`, and with `frames`, per frame f
  `logits_f` (objects, H, W) video-resolution logits and `scores_f` object-score logits.

Two things of the reference are changed at run time, in its own source: timm is asked for `pretrained=False` (the
reference downloads ImageNet weights), and the perceiver's `.view` on an expanded tensor, which fails for more
than one object, becomes `.reshape` (the same numbers).
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch

OBJECT_SCORE_BIAS_OFFSET = 1.0
SCORE_HEAD_BIAS = "sam_mask_decoder.pred_obj_score_head.layers.2.bias"


def reference_env(refs: Path) -> dict[str, str]:
    """Environment of a process that imports EdgeTAM's `sam2` (from `refs`, see scripts/install-dev.sh)."""
    stubs = Path(__file__).resolve().parent / "stubs"
    repo = Path(__file__).resolve().parents[2]
    path = os.pathsep.join(str(p) for p in (refs / "edgetam", refs / "timm", stubs, repo))
    return {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "1"}


def _patch_reference() -> None:
    import sam2.modeling.backbones.timm as timm_backbone
    import sam2.modeling.perceiver as perceiver

    create = timm_backbone.create_model
    timm_backbone.create_model = lambda *a, **k: create(*a, **{**k, "pretrained": False})
    source = textwrap.dedent(inspect.getsource(perceiver.PerceiverResampler.forward_2d))
    fixed = source.replace(".expand(B, -1, -1).view(-1, 1, C)", ".expand(B, -1, -1).reshape(-1, 1, C)")
    assert fixed != source, "the reference's perceiver changed: check the multi-object fix"
    namespace: dict = {}
    exec(compile(fixed, perceiver.__file__, "exec"), perceiver.__dict__, namespace)
    perceiver.PerceiverResampler.forward_2d = namespace["forward_2d"]


def _randomize_norms(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean.data = 0.1 * torch.randn(n, generator=g)
            m.running_var.data = 0.5 + torch.rand(n, generator=g)


def build(size: int, seed: int):
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(seed)
    overrides = []
    if size != 1024:
        e = size // 16
        overrides = [f"++model.image_size={size}", f"++model.memory_attention.layer.cross_attention.q_sizes=[{e},{e}]"]
    predictor = build_sam2_video_predictor("edgetam.yaml", None, device="cpu", hydra_overrides_extra=overrides)
    predictor.fill_hole_area = 0
    _randomize_norms(predictor, seed)
    with torch.no_grad():
        predictor.state_dict()[SCORE_HEAD_BIAS].add_(OBJECT_SCORE_BIAS_OFFSET)
    return predictor.eval()


def _score(state: dict, obj_idx: int, frame: int) -> float:
    outputs, temp = state["output_dict_per_obj"][obj_idx], state["temp_output_dict_per_obj"][obj_idx]
    for d in (temp["cond_frame_outputs"], outputs["cond_frame_outputs"], outputs["non_cond_frame_outputs"]):
        if frame in d:
            return d[frame]["object_score_logits"].item()
    raise KeyError(f"no output for object {obj_idx} on frame {frame}")


def track(predictor, spec: dict, out: dict) -> None:
    """Object 1 by a mask and object 2 by a click on frame 0; correction clicks on `correction_frame`."""
    predictor.add_all_frames_to_correct_as_cond = True
    state = predictor.init_state(video_path=spec["frames"])
    mask = np.load(spec["mask"])
    predictor.add_new_mask(state, frame_idx=0, obj_id=1, mask=mask)
    predictor.add_new_points_or_box(state, frame_idx=0, obj_id=2, points=np.array(spec["click"], np.float32),
                                    labels=np.array([1], np.int32))  # fmt: skip
    k = spec["correction_frame"]

    def keep(frames):
        for f, _, masks in frames:
            out[f"logits_{f}"] = masks[:, 0].numpy().copy()
            out[f"scores_{f}"] = np.array([_score(state, i, f) for i in range(masks.shape[0])], np.float32)

    keep(predictor.propagate_in_video(state, max_frame_num_to_track=k))
    for obj_id, clicks in spec["corrections"].items():
        predictor.add_new_points_or_box(state, frame_idx=k, obj_id=int(obj_id), points=np.array(clicks["points"], np.float32),
                                        labels=np.array(clicks["labels"], np.int32))  # fmt: skip
    keep(predictor.propagate_in_video(state, start_frame_idx=k))


@torch.inference_mode()
def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out_dir = Path(spec["out"])
    _patch_reference()
    predictor = build(spec["size"], spec.get("seed", 0))
    torch.save({"model": predictor.state_dict()}, out_dir / "edgetam.pt")

    g = torch.Generator().manual_seed(7)
    out: dict[str, np.ndarray] = {}
    x = torch.randn(1, 3, spec["size"], spec["size"], generator=g)
    backbone = predictor.image_encoder(x)
    out["image"] = x.numpy()
    for i, (f, p) in enumerate(zip(backbone["backbone_fpn"], backbone["vision_pos_enc"])):
        out[f"fpn_{i}"], out[f"pos_{i}"] = f.numpy(), p.numpy()
    e = spec["size"] // 16
    feats = torch.randn(2, predictor.mem_dim, e, e, generator=g)
    pos = predictor.memory_encoder.position_encoding(feats)
    latents, latents_pos = predictor.spatial_perceiver(feats, pos)
    out["perceiver_in"], out["perceiver_out"], out["perceiver_pos"] = feats.numpy(), latents.numpy(), latents_pos.numpy()
    if spec.get("frames"):
        track(predictor, spec, out)
    np.savez(out_dir / "reference.npz", **out)


if __name__ == "__main__":
    main(sys.argv[1])
