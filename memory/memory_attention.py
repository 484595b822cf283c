"""Memory attention: conditions the current frame's features on the memory bank.

Each layer: self-attention over the current frame's tokens, cross-attention from them
to the memory tokens (spatial memories of past frames, then object pointers), and an
MLP. Spatial tokens carry 2-D RoPE; object-pointer tokens (the last
`num_k_exclude_rope` keys) do not.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from memory.rope import apply_rope, axial_rope_tables
from vos.config import MemoryAttentionConfig
from vos.modeling.attention import Attention

POS_ENC_AT_INPUT_SCALE = 0.1


class RoPEAttention(Attention):
    """Attention with 2-D RoPE on queries and (all but the last `num_k_exclude_rope`) keys."""

    def __init__(self, *args, rope_theta: float, feat_size: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self._set_tables(feat_size)

    def _set_tables(self, side: int, device: torch.device | None = None) -> None:
        cos, sin = axial_rope_tables(self.internal_dim // self.num_heads, side, side, self.rope_theta)
        self.register_buffer("rope_cos", cos.to(device), persistent=False)
        self.register_buffer("rope_sin", sin.to(device), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_k_exclude_rope: int = 0) -> torch.Tensor:
        q, k, v = self.project(q, k, v)
        if self.rope_cos.shape[0] != q.shape[-2]:
            side = math.isqrt(q.shape[-2])
            if side * side != q.shape[-2]:
                raise ValueError("RoPE attention expects a square token grid")
            self._set_tables(side, q.device)
        q = apply_rope(q, self.rope_cos, self.rope_sin)
        num_rope = k.shape[-2] - num_k_exclude_rope
        if num_rope > 0:
            k = torch.cat([apply_rope(k[:, :, :num_rope], self.rope_cos, self.rope_sin), k[:, :, num_rope:]], dim=2)
        return self.attend(q, k, v)


class MemoryAttentionLayer(nn.Module):
    def __init__(self, cfg: MemoryAttentionConfig, d_model: int, mem_dim: int, feat_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.self_attn = RoPEAttention(d_model, cfg.num_heads, rope_theta=cfg.rope_theta, feat_size=feat_size)
        self.cross_attn_image = RoPEAttention(
            d_model, cfg.num_heads, kv_in_dim=mem_dim, rope_theta=cfg.rope_theta, feat_size=feat_size
        )
        self.linear1 = nn.Linear(d_model, cfg.dim_feedforward)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.activation = {"relu": F.relu, "gelu": F.gelu}[cfg.activation]

    def forward(
        self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor, query_pos: torch.Tensor, num_k_exclude_rope: int
    ) -> torch.Tensor:
        x = self.norm1(tgt)
        q = x + query_pos if self.cfg.pos_enc_at_attn else x
        tgt = tgt + self.self_attn(q, q, x)

        x = self.norm2(tgt)
        tgt = tgt + self.cross_attn_image(
            x + query_pos if self.cfg.pos_enc_at_cross_attn_queries else x,
            memory + pos if self.cfg.pos_enc_at_cross_attn_keys else memory,
            memory,
            num_k_exclude_rope=num_k_exclude_rope,
        )
        x = self.norm3(tgt)
        return tgt + self.linear2(self.activation(self.linear1(x)))


class MemoryAttention(nn.Module):
    """curr (HW, B, C) + memory (M, B, C_mem) -> conditioned features (HW, B, C) (sequence-first, as Meta's)."""

    def __init__(self, cfg: MemoryAttentionConfig, d_model: int, mem_dim: int, feat_size: int) -> None:
        super().__init__()
        self.pos_enc_at_input = cfg.pos_enc_at_input
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(cfg, d_model, mem_dim, feat_size) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        curr: torch.Tensor,
        memory: torch.Tensor,
        curr_pos: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        if curr.shape[1] != memory.shape[1]:
            raise ValueError("current features and memory must have the same batch size")
        out = curr + POS_ENC_AT_INPUT_SCALE * curr_pos if self.pos_enc_at_input else curr
        out, curr_pos = out.transpose(0, 1), curr_pos.transpose(0, 1)
        memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
        for layer in self.layers:
            out = layer(out, memory, memory_pos, curr_pos, num_obj_ptr_tokens)
        return self.norm(out).transpose(0, 1)
