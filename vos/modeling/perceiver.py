"""EdgeTAM's spatial perceiver (Zhou et al., 2025): compresses a memory frame before memory attention reads it.

A memory frame's (B, C_mem, E, E) map becomes L = `num_latents` + `num_latents_2d` tokens (B, L, C_mem):
- global latents: learned queries that attend to the whole map (keys and values carry the map's sine
  position); they get no position themselves (zeros);
- 2-D latents: one learned query per window of a G x G grid (G = sqrt(num_latents_2d)), attending only
  to its window's E/G x E/G tokens; their position is the sine encoding of the G x G grid, and memory
  attention rotates their keys (RoPE) on that grid.
Each layer: cross-attention (pre-norm) + MLP, then self-attention + MLP among the latents. Parameter names
are the reference's (`latents`, `latents_2d`, `layers.i.attn.to_q`, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vos.config import PerceiverConfig
from vos.modeling.position_encoding import PositionEmbeddingSine


def feed_forward(dim: int, mult: int) -> nn.Sequential:
    """Pre-norm MLP without biases (indices 0, 1, 3 as the reference's)."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(), nn.Linear(dim * mult, dim, bias=False))


class _Heads(nn.Module):
    """q, k, v projections (no biases) and the output projection of multi-head attention."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim_head * heads, bias=False)
        self.to_kv = nn.Linear(dim, dim_head * heads * 2, bias=False)
        self.to_out = nn.Linear(dim_head * heads, dim, bias=False)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, heads * D) -> (B, heads, N, D)."""
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def attend(self, latents: torch.Tensor, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """latents (B, Nq, C) attend to x (B, Nk, C); `pos` (B or 1, Nk, C) is added to keys and values."""
        q = self.split(self.to_q(latents))
        k, v = (self.split(t) for t in self.to_kv(x).chunk(2, dim=-1))
        if pos is not None:
            pos = self.split(pos)
            k, v = k + pos, v + pos
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).flatten(2))


class PerceiverAttention(_Heads):
    """Latents (pre-norm) attend to the map's tokens (pre-norm)."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__(dim, dim_head, heads)
        self.norm_x = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)

    def forward(self, latents: torch.Tensor, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        return self.attend(self.norm_latents(latents), self.norm_x(x), pos)


class SelfAttention(_Heads):
    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__(dim, dim_head, heads)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.attend(x, x)


class PerceiverLayer(nn.Module):
    def __init__(self, dim: int, cfg: PerceiverConfig) -> None:
        super().__init__()
        self.attn = PerceiverAttention(dim, cfg.dim_head, cfg.heads)
        self.ff = feed_forward(dim, cfg.ff_mult)
        if cfg.use_self_attn:
            self.self_attn = SelfAttention(dim, cfg.dim_head, cfg.heads)
            self.self_ff = feed_forward(dim, cfg.ff_mult)
        self.use_self_attn = cfg.use_self_attn

    def forward(self, latents: torch.Tensor, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        latents = latents + self.attn(latents, x, pos)
        latents = latents + self.ff(latents)
        if self.use_self_attn:
            latents = latents + self.self_attn(latents)
            latents = latents + self.self_ff(latents)
        return latents


class SpatialPerceiver(nn.Module):
    """(B, C_mem, E, E) memory map and its (B or 1, C_mem, E, E) sine encoding -> (B, L, C_mem) latents and their
    (B or 1, L, C_mem) positions: the global latents first, then the 2-D ones in row-major grid order."""

    def __init__(self, dim: int, cfg: PerceiverConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.latents = nn.Parameter(torch.randn(cfg.num_latents, dim))
        self.latents_2d = nn.Parameter(torch.randn(cfg.num_latents_2d, dim))
        self.layers = nn.ModuleList(PerceiverLayer(dim, cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim)
        self.position_encoding = PositionEmbeddingSine(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, e, _ = x.shape
        g = self.cfg.grid
        if e % g:
            raise ValueError(f"the memory map's side {e} is not a multiple of the perceiver's grid {g}")
        tokens = x.flatten(2).transpose(1, 2)  # (B, E*E, C)
        latents = self.latents.expand(b, -1, -1)
        for layer in self.layers:
            latents = layer(latents, tokens, pos.flatten(2).transpose(1, 2))
        w = e // g  # window side: one 2-D latent per window
        windows = x.view(b, c, g, w, g, w).permute(0, 2, 4, 3, 5, 1).reshape(b * g * g, w * w, c)
        latents_2d = self.latents_2d.reshape(-1, 1, c).repeat(b, 1, 1)  # (B * G * G, 1, C)
        for layer in self.layers:
            latents_2d = layer(latents_2d, windows)
        latents_2d = latents_2d.view(b, g * g, c)
        out = torch.cat((self.norm(latents), self.norm(latents_2d)), dim=1)
        return out, self.positions(x.device).to(out.dtype)

    def positions(self, device: torch.device) -> torch.Tensor:
        """(1, L, C) positions of the latents: zeros for the global ones, the G x G grid's sine encoding for the 2-D."""
        g, c = self.cfg.grid, self.latents.shape[-1]
        pos_2d = self.position_encoding.encoding(g, g, device).flatten(1).t()[None]  # (1, G*G, C)
        return torch.cat((pos_2d.new_zeros(1, self.cfg.num_latents, c), pos_2d), dim=1)
