"""Meta's image-mode inference path, driven through Meta's own modules.

Meta's SAM2ImagePredictor imports torchvision (which does not install beside the CPU
torch here) and hard-codes 1024-px feature sizes, so the tests drive the modules it
calls (forward_image, _prepare_backbone_features, sam_prompt_encoder, sam_mask_decoder)
in the same order, with the same prompt conventions.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def meta_image_features(meta, x: torch.Tensor) -> dict:
    """x (1, 3, S, S) -> {"image_embed": (1, C, E, E), "high_res_feats": [...]}, as SAM2ImagePredictor.set_image."""
    backbone_out = meta.forward_image(x)
    _, vision_feats, _, feat_sizes = meta._prepare_backbone_features(backbone_out)
    if meta.directly_add_no_mem_embed:
        vision_feats[-1] = vision_feats[-1] + meta.no_mem_embed
    feats = [f.permute(1, 2, 0).view(1, -1, *size) for f, size in zip(vision_feats, feat_sizes)]
    return {"image_embed": feats[-1], "high_res_feats": feats[:-1]}


@torch.no_grad()
def meta_predict(meta, features: dict, orig_hw, point_coords=None, point_labels=None, box=None,
                 mask_input=None, multimask_output=True):
    """SAM2ImagePredictor._prep_prompts + _predict, returning logits at orig size, IoUs, low-res logits."""
    s = meta.image_size
    h, w = orig_hw
    scale = torch.tensor([s / w, s / h])
    points = None
    if point_coords is not None:
        coords = torch.as_tensor(point_coords, dtype=torch.float) * scale
        labels = torch.as_tensor(point_labels, dtype=torch.int)
        if coords.ndim == 2:
            coords, labels = coords[None], labels[None]
        points = (coords, labels)
    if box is not None:
        box_coords = torch.as_tensor(box, dtype=torch.float).reshape(-1, 2, 2) * scale
        box_labels = torch.tensor([[2, 3]], dtype=torch.int).repeat(box_coords.shape[0], 1)
        if points is not None:
            points = (torch.cat([box_coords, points[0]], 1), torch.cat([box_labels, points[1]], 1))
        else:
            points = (box_coords, box_labels)
    masks = None
    if mask_input is not None:
        masks = torch.as_tensor(mask_input, dtype=torch.float)
        if masks.ndim == 3:
            masks = masks[None]
    sparse, dense = meta.sam_prompt_encoder(points=points, boxes=None, masks=masks)
    low_res, ious, _, _ = meta.sam_mask_decoder(
        image_embeddings=features["image_embed"],
        image_pe=meta.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
        repeat_image=points is not None and points[0].shape[0] > 1,
        high_res_features=features["high_res_feats"],
    )
    full = F.interpolate(low_res, orig_hw, mode="bilinear", align_corners=False)
    low_res = torch.clamp(low_res, -32.0, 32.0)
    squeeze = (lambda t: t[0]) if low_res.shape[0] == 1 else (lambda t: t)
    return tuple(np.asarray(squeeze(t).float().numpy()) for t in (full, ious, low_res))
