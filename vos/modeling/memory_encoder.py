"""Memory encoder: fuses a frame's features with its predicted mask into a compact memory.

mask (B, 1, S, S) -> strided convs down to the stride-16 grid, added to projected pixel
features (B, C, E, E), refined by ConvNeXt blocks, projected to `out_dim` channels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vos.config import MemoryEncoderConfig
from vos.modeling.common import LayerNorm2d
from vos.modeling.position_encoding import PositionEmbeddingSine


class MaskDownSampler(nn.Module):
    """(B, 1, S, S) -> (B, C, S/16, S/16); channels grow by stride^2 at each step."""

    def __init__(self, embed_dim: int, cfg: MemoryEncoderConfig) -> None:
        super().__init__()
        num_layers = int(math.log2(cfg.mask_total_stride) // math.log2(cfg.mask_stride))
        if cfg.mask_stride**num_layers != cfg.mask_total_stride:
            raise ValueError("mask_total_stride must be a power of mask_stride")
        self.encoder = nn.Sequential()
        chans = 1
        for _ in range(num_layers):
            out = chans * cfg.mask_stride**2
            self.encoder.append(
                nn.Conv2d(chans, out, kernel_size=cfg.mask_kernel_size, stride=cfg.mask_stride, padding=cfg.mask_padding)
            )
            self.encoder.append(LayerNorm2d(out))
            self.encoder.append(nn.GELU())
            chans = out
        self.encoder.append(nn.Conv2d(chans, embed_dim, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class CXBlock(nn.Module):
    """ConvNeXt block: depth-wise conv, LayerNorm, pointwise MLP, layer scale, residual."""

    def __init__(self, dim: int, cfg: MemoryEncoderConfig) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=cfg.fuser_kernel_size, padding=cfg.fuser_padding, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(cfg.fuser_layer_scale_init_value * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class Fuser(nn.Module):
    def __init__(self, dim: int, cfg: MemoryEncoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim, cfg) for _ in range(cfg.fuser_num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    def __init__(self, in_dim: int, cfg: MemoryEncoderConfig) -> None:
        super().__init__()
        self.mask_downsampler = MaskDownSampler(in_dim, cfg)
        self.pix_feat_proj = nn.Conv2d(in_dim, in_dim, kernel_size=1)
        self.fuser = Fuser(in_dim, cfg)
        self.position_encoding = PositionEmbeddingSine(cfg.out_dim)
        self.out_proj = nn.Conv2d(in_dim, cfg.out_dim, kernel_size=1) if cfg.out_dim != in_dim else nn.Identity()

    def forward(
        self, pix_feat: torch.Tensor, masks: torch.Tensor, skip_mask_sigmoid: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pix_feat (B or 1, C, E, E), masks (B, 1, S, S) logits -> memory (B, C_mem, E, E) and its position encoding.

        One `pix_feat` row is shared by all B masks (one frame, several objects).
        """
        if not skip_mask_sigmoid:
            masks = torch.sigmoid(masks)
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)
        x = self.out_proj(self.fuser(x))
        return x, self.position_encoding(x)
