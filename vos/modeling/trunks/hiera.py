"""Hiera image encoder trunk (Ryali et al., 2023) as used by SAM 2.

A hierarchy of stages; between stages the queries of the first block are max-pooled
(q-pooling) so resolution halves and channels double. Most blocks attend inside
windows; a few attend globally. The absolute position embedding is a small learned
map interpolated to the feature size plus a tiled per-window embedding
("window positional embedding", Bolya et al., 2023).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vos.config import HieraConfig
from vos.modeling.attention import attention
from vos.modeling.common import MLP, weights_key

LAYER_NORM_EPS = 1e-6


def window_partition(x: torch.Tensor, window: int, fill: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * nWindows, window, window, C), H and W padded up to a multiple of `window` with the (C,) vector `fill`."""
    b, h, w, c = x.shape
    hp, wp = h + (-h) % window, w + (-w) % window
    if (hp, wp) != (h, w):
        padded = fill.to(x.dtype).expand(b, hp, wp, c).clone()
        padded[:, :h, :w] = x
        x = padded
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window: int, padded_hw: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nWindows, window, window, C) -> (B, H, W, C)."""
    hp, wp = padded_hw
    h, w = hw
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, :h, :w, :] if (hp > h or wp > w) else x


def _pool_nhwc(x: torch.Tensor, pool: nn.Module) -> torch.Tensor:
    return pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Multi-head self-attention on a (B, H, W, C) map, in windows or global, optionally pooling the queries.

    The projections run on the map's own tokens only: a window's zero padding projects to
    the qkv bias, so padded windows are filled with it, and padded outputs are cropped
    before the output projection (the same numbers as projecting the padding, fewer FLOPs).
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_pool: nn.Module | None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_pool = q_pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor, window: int = 0) -> torch.Tensor:
        """(B, H, W, C) -> (B, H', W', C_out); H' = H / q_stride when the queries are pooled. `window` 0: global."""
        qkv = self.qkv(x)
        if window == 0:
            return self.proj(self._attend(qkv))
        hw = x.shape[1:3]
        bias = self.qkv.bias() if callable(self.qkv.bias) else self.qkv.bias  # an int8 layer's bias is a method
        windows, padded_hw = window_partition(qkv, window, fill=bias)
        out = self._attend(windows)
        if self.q_pool is not None:
            stride = windows.shape[1] // out.shape[1]
            window //= stride
            hw = tuple(side // stride for side in hw)
            padded_hw = tuple(side // stride for side in padded_hw)
        return self.proj(window_unpartition(out, window, padded_hw, hw))

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3C) projected tokens -> (B, H', W', C) attention output before the output projection."""
        b, h, w, _ = qkv.shape
        q, k, v = qkv.reshape(b, h * w, 3, self.num_heads, -1).unbind(2)
        if self.q_pool is not None:
            q = _pool_nhwc(q.reshape(b, h, w, -1), self.q_pool)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2).reshape(b, h, w, -1)


class MultiScaleBlock(nn.Module):
    """Pre-norm transformer block; windowed when `window_size > 0`, q-pooled when `q_stride` is set."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        mlp_ratio: float,
        q_stride: tuple[int, int] | None,
        window_size: int,
    ) -> None:
        super().__init__()
        self.dim, self.dim_out = dim, dim_out
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pool = nn.MaxPool2d(kernel_size=q_stride, stride=q_stride) if q_stride else None
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_pool=self.pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=LAYER_NORM_EPS)
        self.mlp = MLP(dim_out, int(dim_out * mlp_ratio), dim_out, num_layers=2, activation=nn.GELU)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool is not None:
                shortcut = _pool_nhwc(shortcut, self.pool)
        x = shortcut + self.attn(x, self.window_size)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Strided conv stem: (B, 3, H, W) -> (B, H/4, W/4, C)."""

    def __init__(self, embed_dim: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """(B, 3, S, S) image -> one (B, C_i, S/4/2^i, S/4/2^i) map per stage, highest resolution first."""

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.embed_dim, cfg.patch_kernel_size, cfg.patch_stride, cfg.patch_padding)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.embed_dim, *cfg.window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, cfg.embed_dim, cfg.window_spec[0], cfg.window_spec[0])
        )
        self.stage_ends = [sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages))]
        q_pool_blocks = {end + 1 for end in self.stage_ends[:-1][: cfg.q_pool]}

        self.blocks = nn.ModuleList()
        dim, heads, stage = cfg.embed_dim, cfg.num_heads, 0
        for i in range(sum(cfg.stages)):
            # The window size lags the stage by one block: the first (q-pooling) block of a
            # stage still partitions with the previous stage's window.
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out = int(dim * cfg.dim_mul)
                heads = int(heads * cfg.head_mul)
                stage += 1
            self.blocks.append(
                MultiScaleBlock(
                    dim,
                    dim_out,
                    heads,
                    cfg.mlp_ratio,
                    q_stride=tuple(cfg.q_stride) if i in q_pool_blocks else None,
                    window_size=window,
                )
            )
            dim = dim_out
        self.channel_list = [self.blocks[i].dim_out for i in self.stage_ends[::-1]]
        self._pos_cache: tuple[tuple, torch.Tensor] | None = None

    def _pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """(1, H, W, C) position embedding of an (H, W) patch grid; kept while the weights do not change (no autograd)."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self._make_pos_embed(hw)
        key = (tuple(hw), weights_key(self.pos_embed, self.pos_embed_window))
        if self._pos_cache is None or self._pos_cache[0] != key:
            self._pos_cache = (key, self._make_pos_embed(hw))
        return self._pos_cache[1]

    def _make_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic")
        reps = [p // w for p, w in zip(pos.shape, self.pos_embed_window.shape)]
        return (pos + self.pos_embed_window.tile(reps)).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._pos_embed(x.shape[1:3])
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
