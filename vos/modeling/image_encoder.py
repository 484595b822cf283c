"""Image encoder: a trunk (`vos.modeling.trunks`) + a neck (`vos.modeling.neck`), each named by the config.

SAM 2 and EdgeTAM: the FPN neck projects each trunk stage to `d_model` channels, adds
top-down features on the configured levels, and attaches a sine position encoding; the
lowest-resolution level is dropped ("scalp"), leaving strides 4, 8 and 16. EfficientTAM:
one stride-16 map from a plain ViT through ViTDet's simple neck.
"""

from __future__ import annotations

import torch
from torch import nn

from vos.config import ModelConfig
from vos.modeling.neck import build_neck
from vos.modeling.trunks import build_trunk


class ImageEncoder(nn.Module):
    """(B, 3, S, S) normalized image -> features and position encodings, highest resolution first (strides 4, 8,
    16; or 16 alone for a one-map trunk)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.trunk = build_trunk(cfg.trunk)
        if self.trunk.channel_list != cfg.trunk.channel_list:
            raise AssertionError("trunk channel list disagrees with the config")
        self.neck = build_neck(cfg.neck, self.trunk.channel_list)
        self.scalp = cfg.neck.scalp

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats, pos = self.neck(self.trunk(images))
        if self.scalp > 0:
            feats, pos = feats[: -self.scalp], pos[: -self.scalp]
        return feats, pos
