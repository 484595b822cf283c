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
