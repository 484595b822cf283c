"""Image encoder: a trunk (`vos.modeling.trunks`, named by the config) + the FPN neck (`vos.modeling.neck`).

The neck projects each trunk stage to `d_model` channels, adds top-down features on
the configured levels, and attaches a sine position encoding. The lowest-resolution
level is dropped ("scalp"), leaving strides 4, 8 and 16.
"""

from __future__ import annotations

import torch
from torch import nn

from vos.config import ModelConfig
from vos.modeling.neck import FpnNeck
from vos.modeling.trunks import build_trunk


class ImageEncoder(nn.Module):
    """(B, 3, S, S) normalized image -> FPN features and position encodings at strides 4, 8, 16."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.trunk = build_trunk(cfg.trunk)
        if self.trunk.channel_list != cfg.trunk.channel_list:
            raise AssertionError("trunk channel list disagrees with the config")
        self.neck = FpnNeck(cfg.neck, self.trunk.channel_list)
        self.scalp = cfg.neck.scalp

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats, pos = self.neck(self.trunk(images))
        if self.scalp > 0:
            feats, pos = feats[: -self.scalp], pos[: -self.scalp]
        return feats, pos
