"""Necks: trunk maps -> `d_model`-channel features with sine position encodings, one module per config `kind`.

- `FpnNeck` (SAM 2, EdgeTAM): lateral 1x1 convs, top-down fusion on some levels.
- `ViTDetNeck` (EfficientTAM): ViTDet's simple neck on a one-map trunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vos.config import NeckConfig, NeckKind, ViTDetNeckConfig
from vos.modeling.common import LayerNorm2d
from vos.modeling.position_encoding import PositionEmbeddingSine


class FpnNeck(nn.Module):
    """Stage maps (highest resolution first) -> (features, position encodings), both (B, C, H_i, W_i), C = d_model."""

    def __init__(self, cfg: NeckConfig, backbone_channel_list: list[int]) -> None:
        super().__init__()
        self.position_encoding = PositionEmbeddingSine(cfg.d_model)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            lateral = nn.Sequential()
            lateral.add_module("conv", nn.Conv2d(dim, cfg.d_model, kernel_size=1))
            self.convs.append(lateral)
        self.top_down_levels = set(cfg.fpn_top_down_levels)
        self.interp_mode = cfg.fpn_interp_model
        self.fuse_type = cfg.fuse_type
        self.projected: set[int] = set()  # levels whose lateral conv includes the decoder's 1x1 projection

    def can_project(self, level: int) -> bool:
        """True if `level`'s output is its lateral conv alone, used nowhere else (no top-down sum into it or
        from it), so a 1x1 projection after it can be folded into it."""
        return level not in self.top_down_levels and (level == 0 or level - 1 not in self.top_down_levels)

    @torch.no_grad()
    def fold_projection(self, level: int, proj: nn.Conv2d) -> None:
        """Replaces `level`'s lateral 1x1 conv by `proj` after it, as one 1x1 conv (the decoder's conv_s0/conv_s1:
        at stride 4 a 48 -> 256 -> 32 pair becomes 48 -> 32, a tenth of the work)."""
        if not self.can_project(level):
            raise ValueError(f"FPN level {level} takes part in the top-down sum: its projection cannot be folded")
        lateral = self.convs[len(self.convs) - 1 - level].conv
        w = proj.weight.flatten(1)  # (C_out, C)
        fused = nn.Conv2d(lateral.in_channels, proj.out_channels, kernel_size=1, device=w.device)
        fused.weight.copy_((w @ lateral.weight.flatten(1)).view_as(fused.weight))
        fused.bias.copy_(w @ lateral.bias + proj.bias)
        self.convs[len(self.convs) - 1 - level].conv = fused
        self.projected.add(level)

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        n = len(self.convs) - 1
        feats: list[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):  # lowest resolution first
            lateral = self.convs[n - i](xs[i])
            if i in self.top_down_levels and prev is not None:
                top_down = F.interpolate(
                    prev.float(),
                    scale_factor=2.0,
                    mode=self.interp_mode,
                    align_corners=None if self.interp_mode == "nearest" else False,
                )
                prev = lateral + top_down
                if self.fuse_type == "avg":
                    prev = prev / 2
            else:
                prev = lateral
            feats[i] = prev
        return feats, [self.position_encoding(f) for f in feats]


class ViTDetNeck(nn.Module):
    """[(B, C_trunk, E, E)] -> ([(B, C, E, E)], [its position encoding]), C = d_model: 1x1 conv, 3x3 conv, each
    followed by a channel LayerNorm when `cfg.norm` (then the convolutions have no bias)."""

    def __init__(self, cfg: ViTDetNeckConfig, backbone_channel_list: list[int]) -> None:
        super().__init__()
        self.position_encoding = PositionEmbeddingSine(cfg.d_model)
        self.convs = nn.ModuleList()
        for dim in backbone_channel_list:
            layers = nn.Sequential()
            layers.add_module("conv_1x1", nn.Conv2d(dim, cfg.d_model, kernel_size=1, bias=not cfg.norm))
            if cfg.norm:
                layers.add_module("norm_0", LayerNorm2d(cfg.d_model))
            layers.add_module("conv_3x3", nn.Conv2d(cfg.d_model, cfg.d_model, kernel_size=3, padding=1, bias=not cfg.norm))
            if cfg.norm:
                layers.add_module("norm_1", LayerNorm2d(cfg.d_model))
            self.convs.append(layers)

    def forward(self, xs: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(xs) != len(self.convs):
            raise ValueError(f"the neck takes {len(self.convs)} maps, got {len(xs)}")
        feats = [conv(x) for conv, x in zip(self.convs, xs)]
        return feats, [self.position_encoding(f) for f in feats]


def build_neck(cfg: NeckKind, backbone_channel_list: list[int]) -> nn.Module:
    """The neck module `cfg.kind` names."""
    return {"fpn": FpnNeck, "vitdet": ViTDetNeck}[cfg.kind](cfg, backbone_channel_list)
