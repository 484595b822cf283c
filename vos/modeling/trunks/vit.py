"""Plain ViT trunk (ViTDet, Li et al. 2022) as EfficientTAM uses it.

A 16x16 patch embedding, an absolute position embedding learned on a 224-px grid (with a
class token, dropped) and interpolated bicubically to the patch grid, then transformer
blocks that attend inside 14x14 windows except a few global ones. One stride-16 map comes
out. The blocks are Hiera's blocks without pooling (`vos.modeling.trunks.hiera`), the same
numbers and key names as ViTDet's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vos.config import ViTConfig
from vos.modeling.common import weights_key
from vos.modeling.trunks.hiera import MultiScaleBlock, PatchEmbed


class ViT(nn.Module):
    """(B, 3, S, S) image -> [(B, C, S/16, S/16)]."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.embed_dim, cfg.patch_size, cfg.patch_size, 0)
        grid = cfg.pretrain_img_size // cfg.patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + int(cfg.pretrain_use_cls_token), cfg.embed_dim))
        windowed = set(cfg.window_block_indexes)
        self.blocks = nn.ModuleList(
            MultiScaleBlock(
                cfg.embed_dim, cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, q_stride=None,
                window_size=cfg.window_size if i in windowed else 0,
            )  # fmt: skip
            for i in range(cfg.depth)
        )
        self.channel_list = cfg.channel_list
        self._pos_cache: tuple[tuple, torch.Tensor] | None = None

    def _pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """(1, H, W, C) position embedding of an (H, W) patch grid; kept while the weights do not change (no autograd)."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._make_pos_embed(hw)
        key = (tuple(hw), weights_key(self.pos_embed))
        if self._pos_cache is None or self._pos_cache[0] != key:
            self._pos_cache = (key, self._make_pos_embed(hw))
        return self._pos_cache[1]

    def _make_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        pos = self.pos_embed[:, 1:] if self.cfg.pretrain_use_cls_token else self.pos_embed
        side = self.cfg.pretrain_img_size // self.cfg.patch_size
        grid = pos.reshape(1, side, side, -1)
        if tuple(hw) == (side, side):
            return grid
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=tuple(hw), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._pos_embed(x.shape[1:3])
        for block in self.blocks:
            x = block(x)
        return [x.permute(0, 3, 1, 2)]
