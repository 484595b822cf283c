"""Meta's SAM2AutomaticMaskGenerator as the everything mode's oracle.

It imports torchvision (`ops.boxes.batched_nms`, `box_area`; `transforms.Resize`, `Normalize`, `ToTensor`), whose
PyPI wheels do not import beside the CPU torch used here. Unless the real one imports, a small functional
stand-in is put in `sys.modules` with torchvision's semantics for what Meta's code calls: greedy NMS over
boxes sorted by score (stable, descending; IoU above the threshold suppresses), and tensor resizing as
`transforms.Resize` does (bilinear, antialiased).
"""

from __future__ import annotations

import sys
import types
from typing import List

import torch
import torch.nn.functional as F
from torch import nn


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))  # Python's sort is stable
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            if idxs[i] != idxs[j]:
                continue
            b1, b2 = boxes[i].tolist(), boxes[j].tolist()
            w = max(0.0, min(b1[2], b2[2]) - max(b1[0], b2[0]))
            h = max(0.0, min(b1[3], b2[3]) - max(b1[1], b2[1]))
            inter = w * h
            union = (b1[2] - b1[0]) * (b1[3] - b1[1]) + (b2[2] - b2[0]) * (b2[3] - b2[1]) - inter
            if inter / union > iou_threshold:
                ok = False
                break
        if ok:
            kept.append(i)
    return torch.tensor(kept, dtype=torch.long)


class _ToTensor:
    def __call__(self, image) -> torch.Tensor:
        return torch.from_numpy(image).permute(2, 0, 1).contiguous().float() / 255.0


class _Resize(nn.Module):
    def __init__(self, size: List[int]) -> None:
        super().__init__()
        self.size: List[int] = list(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0]


class _Normalize(nn.Module):
    def __init__(self, mean: List[float], std: List[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _install_torchvision_stand_in() -> None:
    try:
        import torchvision.ops.boxes  # noqa: F401
        import torchvision.transforms  # noqa: F401
        return
    except Exception:
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
    names = ("torchvision", "torchvision.ops", "torchvision.ops.boxes", "torchvision.transforms")
    tv, ops, boxes, transforms = (types.ModuleType(n) for n in names)
    boxes.batched_nms, boxes.box_area = _batched_nms, _box_area
    transforms.Resize, transforms.Normalize, transforms.ToTensor = _Resize, _Normalize, _ToTensor
    tv.ops, tv.transforms, ops.boxes = ops, transforms, boxes
    sys.modules.update({"torchvision": tv, "torchvision.ops": ops, "torchvision.ops.boxes": boxes,
                        "torchvision.transforms": transforms})  # fmt: skip


def meta_generator(meta_model, **settings):
    """Meta's SAM2AutomaticMaskGenerator on `meta_model` (any image size: its predictor's hard-coded 1024-px
    feature sizes are set from the model)."""
    _install_torchvision_stand_in()
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    generator = SAM2AutomaticMaskGenerator(meta_model, **settings)
    e = meta_model.image_size // 16
    generator.predictor._bb_feat_sizes = [(4 * e, 4 * e), (2 * e, 2 * e), (e, e)]
    return generator
