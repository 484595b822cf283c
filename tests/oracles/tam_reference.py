"""The efficient trackers' reference code as test oracles, each run in a process of its own.

- `edgetam`: EdgeTAM's code (PyPI `edgetam-dimos==1.0.1`, in `.refs/edgetam`, with timm in `.refs/timm`);
- `efficienttam`: EfficientTAM's code (PyPI `efficient-track-anything==1.0`, in `.refs/efficienttam`).

Both install a package named `sam2`, as Meta's does, so each runs here with PYTHONPATH holding its folder (and the
torchvision stand-in) first (`reference_env`), never beside Meta's `sam2`.

    python tests/oracles/tam_reference.py SPEC.json

SPEC: {"family": "edgetam" | "efficienttam", "config": the EfficientTAM variant (efficienttam_ti, ...), "out":
folder, "size": 512 | 1024, "seed": 0, "frames": folder of S x S JPEGs (or null), "mask": .npy bool mask of object 1
on frame 0, "click": [[x, y]] (object 2), "correction_frame": k, "corrections": {obj_id: {"points": [[x, y], ...],
"labels": [...]}}} (clicks on frame k). Writes to `out`:
- `CONFIG.pt` (`edgetam.pt`): the random weights in the reference's checkpoint format ({"model": state_dict}).
  Norms whose initialization is the identity are randomized (EdgeTAM's batch norms: timm initializes them to the
  identity, and RepViT's MLP output norm to zero, which would hide whole branches from the comparison;
  EfficientTAM's layer norms and its position embedding, initialized to zero), and the object-score head's bias
  is shifted so that tracked objects are present (as the SAM 2 tests do);
- `reference.npz`: `image` (1, 3, S, S) input, the backbone's `fpn_i` / `pos_i` levels for it; EdgeTAM: the spatial
  perceiver's `perceiver_in` (2, C_mem, E, E) -> `perceiver_out`, `perceiver_pos`; with `frames`, per frame f
  `logits_f` (objects, H, W) video-resolution logits and, where the reference keeps them, `scores_f` object-score
  logits (EfficientTAM's predictor, SAM 2's first release, does not).

EdgeTAM's code is changed at run time, in its own source: timm is asked for `pretrained=False` (the reference
downloads ImageNet weights), and the perceiver's `.view` on an expanded tensor, which fails for more than one
object, becomes `.reshape` (the same numbers). EfficientTAM's package ships no model configs: `EFFICIENTTAM` below
writes its published configs (efficient_track_anything/configs/efficienttam_*.yaml) as a dict.
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
TRUNK_SIZES = {"efficienttam_ti": (192, 3), "efficienttam_s": (384, 6)}  # embed_dim, heads


def reference_env(refs: Path, family: str) -> dict[str, str]:
    """Environment of a process that imports `family`'s `sam2` (from `refs`, see scripts/install-dev.sh)."""
    stubs = Path(__file__).resolve().parent / "stubs"
    repo = Path(__file__).resolve().parents[2]
    folders = {"edgetam": [refs / "edgetam", refs / "timm"], "efficienttam": [refs / "efficienttam"]}[family]
    path = os.pathsep.join(str(p) for p in (*folders, stubs, repo))
    return {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "1"}


def _patch_edgetam() -> None:
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


def _randomize_layer_norms(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed + 2)
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm) or type(m).__name__ == "LayerNorm2d":
            m.weight.data = 1.0 + 0.2 * torch.randn(m.weight.shape, generator=g)
            m.bias.data = 0.2 * torch.randn(m.bias.shape, generator=g)
    trunk = model.image_encoder.trunk
    trunk.pos_embed.data = 0.02 * torch.randn(trunk.pos_embed.shape, generator=g)


def efficienttam_config(variant: str, size: int) -> dict:
    """The model config of an EfficientTAM variant as its repository publishes it (the 512x512 files differ only in
    `image_size`, the _1 and _2 ones in their memory cross-attention), with the video predictor's overrides
    (`build_sam2_video_predictor`)."""
    base, _, pooled = variant.removesuffix("_512x512").rpartition("_")  # efficienttam_ti_1: pooled memory, variant 1
    embed_dim, heads = TRUNK_SIZES[base] if pooled in ("1", "2") else TRUNK_SIZES[f"{base}_{pooled}"]
    cross = "RoPEAttention" if pooled not in ("1", "2") else f"EfficientRoPEAttention{pooled}"
    sine = lambda n: {"_target_": "sam2.modeling.position_encoding.PositionEmbeddingSine", "num_pos_feats": n,  # noqa: E731
                      "normalize": True, "scale": None, "temperature": 10000}  # fmt: skip
    rope = {"_target_": "sam2.modeling.sam.transformer.RoPEAttention", "rope_theta": 10000.0, "feat_sizes": [32, 32],
            "embedding_dim": 256, "num_heads": 1, "downsample_rate": 1, "dropout": 0.1}  # fmt: skip
    return {
        "_target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
        "image_encoder": {
            "_target_": "sam2.modeling.backbones.image_encoder.ImageEncoder", "scalp": 0,
            "trunk": {"_target_": "sam2.modeling.backbones.vitdet.ViT", "patch_size": 16, "embed_dim": embed_dim,
                      "depth": 12, "num_heads": heads, "mlp_ratio": 4.0, "qkv_bias": True, "drop_path_rate": 0.0,
                      "use_rel_pos": False, "window_size": 14, "window_block_indexes": [0, 1, 3, 4, 6, 7, 9, 10]},
            "neck": {"_target_": "sam2.modeling.backbones.image_encoder.ViTDetNeck", "position_encoding": sine(256),
                     "d_model": 256, "backbone_channel_list": [embed_dim], "neck_norm": "LN"},
        },
        "memory_attention": {
            "_target_": "sam2.modeling.memory_attention.MemoryAttention", "d_model": 256, "pos_enc_at_input": True,
            "num_layers": 4,
            "layer": {"_target_": "sam2.modeling.memory_attention.MemoryAttentionLayer", "activation": "relu",
                      "dim_feedforward": 2048, "dropout": 0.1, "pos_enc_at_attn": False, "self_attention": rope,
                      "d_model": 256, "pos_enc_at_cross_attn_keys": True, "pos_enc_at_cross_attn_queries": False,
                      "cross_attention": {**rope, "_target_": f"sam2.modeling.sam.transformer.{cross}",
                                          "rope_k_repeat": True, "kv_in_dim": 64}},
        },
        "memory_encoder": {
            "_target_": "sam2.modeling.memory_encoder.MemoryEncoder", "out_dim": 64, "position_encoding": sine(64),
            "mask_downsampler": {"_target_": "sam2.modeling.memory_encoder.MaskDownSampler", "kernel_size": 3,
                                 "stride": 2, "padding": 1},
            "fuser": {"_target_": "sam2.modeling.memory_encoder.Fuser", "num_layers": 2,
                      "layer": {"_target_": "sam2.modeling.memory_encoder.CXBlock", "dim": 256, "kernel_size": 7,
                                "padding": 3, "layer_scale_init_value": 1e-6, "use_dwconv": True}},
        },
        "num_maskmem": 7, "image_size": size, "sigmoid_scale_for_mem_enc": 20.0, "sigmoid_bias_for_mem_enc": -10.0,
        "use_mask_input_as_output_without_sam": True, "directly_add_no_mem_embed": True,
        "use_high_res_features_in_sam": False, "multimask_output_in_sam": True, "iou_prediction_use_sigmoid": True,
        "use_obj_ptrs_in_encoder": True, "add_tpos_enc_to_obj_ptrs": False, "only_obj_ptrs_in_the_past_for_eval": True,
        "pred_obj_scores": True, "pred_obj_scores_mlp": True, "fixed_no_obj_ptr": True,
        "multimask_output_for_tracking": True, "use_multimask_token_for_obj_ptr": True, "multimask_min_pt_num": 0,
        "multimask_max_pt_num": 1, "use_mlp_for_obj_ptr_proj": True, "compile_image_encoder": False,
        "binarize_mask_from_pts_for_mem_enc": True,
        "sam_mask_decoder_extra_args": {"dynamic_multimask_via_stability": True,
                                        "dynamic_multimask_stability_delta": 0.05,
                                        "dynamic_multimask_stability_thresh": 0.98},
    }  # fmt: skip


def build(spec: dict):
    """The family's video predictor with random weights (seed `spec["seed"]`)."""
    size, seed = spec["size"], spec.get("seed", 0)
    torch.manual_seed(seed)
    if spec["family"] == "edgetam":
        from sam2.build_sam import build_sam2_video_predictor

        _patch_edgetam()
        overrides = []
        if size != 1024:
            e = size // 16
            q_sizes = f"++model.memory_attention.layer.cross_attention.q_sizes=[{e},{e}]"
            overrides = [f"++model.image_size={size}", q_sizes]
        predictor = build_sam2_video_predictor("edgetam.yaml", None, device="cpu", hydra_overrides_extra=overrides)
        _randomize_norms(predictor, seed)
    else:
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(efficienttam_config(spec["config"], size))
        predictor = instantiate(cfg, _recursive_=True)
        _randomize_layer_norms(predictor, seed)
    predictor.fill_hole_area = 0
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
    # EfficientTAM's predictor (SAM 2's first release) names it add_new_points and keeps no object scores
    add_points = getattr(predictor, "add_new_points_or_box", None) or predictor.add_new_points
    scores = spec["family"] == "edgetam"
    predictor.add_new_mask(state, frame_idx=0, obj_id=1, mask=np.load(spec["mask"]))
    add_points(state, frame_idx=0, obj_id=2, points=np.array(spec["click"], np.float32), labels=np.array([1], np.int32))
    k = spec["correction_frame"]

    def keep(frames):
        for f, _, masks in frames:
            out[f"logits_{f}"] = masks[:, 0].numpy().copy()
            if scores:
                out[f"scores_{f}"] = np.array([_score(state, i, f) for i in range(masks.shape[0])], np.float32)

    keep(predictor.propagate_in_video(state, max_frame_num_to_track=k))
    for obj_id, clicks in spec["corrections"].items():
        add_points(state, frame_idx=k, obj_id=int(obj_id), points=np.array(clicks["points"], np.float32),
                   labels=np.array(clicks["labels"], np.int32))  # fmt: skip
    keep(predictor.propagate_in_video(state, start_frame_idx=k))


@torch.inference_mode()
def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out_dir = Path(spec["out"])
    predictor = build(spec)
    torch.save({"model": predictor.state_dict()}, out_dir / f"{spec.get('config') or spec['family']}.pt")

    g = torch.Generator().manual_seed(7)
    out: dict[str, np.ndarray] = {}
    x = torch.randn(1, 3, spec["size"], spec["size"], generator=g)
    backbone = predictor.image_encoder(x)
    out["image"] = x.numpy()
    for i, (f, p) in enumerate(zip(backbone["backbone_fpn"], backbone["vision_pos_enc"])):
        out[f"fpn_{i}"], out[f"pos_{i}"] = f.numpy(), p.numpy()
    if getattr(predictor, "spatial_perceiver", None) is not None:
        e = spec["size"] // 16
        feats = torch.randn(2, predictor.mem_dim, e, e, generator=g)
        pos = predictor.memory_encoder.position_encoding(feats)
        latents, latents_pos = predictor.spatial_perceiver(feats, pos)
        out["perceiver_in"], out["perceiver_out"] = feats.numpy(), latents.numpy()
        out["perceiver_pos"] = latents_pos.numpy()
    if spec.get("frames"):
        track(predictor, spec, out)
    np.savez(out_dir / "reference.npz", **out)


if __name__ == "__main__":
    main(sys.argv[1])
