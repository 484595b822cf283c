"""Multi-head attention with an optional down-projection of the internal width (SAM's `Attention`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

QUERY_ROWS = 1024  # bf16 CPU attention: query rows per score block


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(Q K^T / sqrt(D)) V per head: q (..., Nq, D), k and v (..., Nk, D) -> (..., Nq, D).

    Fused SDPA, except for bfloat16 on the CPU: there SDPA's kernel reaches about a quarter
    of the bf16 matrix-multiply rate, so the scores are made by matmuls, QUERY_ROWS queries at
    a time (softmax accumulates in float32 inside the bf16 kernel).
    """
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return F.scaled_dot_product_attention(q, k, v)
    q = q * q.shape[-1] ** -0.5
    kt = k.transpose(-1, -2)
    if q.shape[-2] <= QUERY_ROWS:
        return torch.softmax(q @ kt, dim=-1) @ v
    return torch.cat([torch.softmax(c @ kt, dim=-1) @ v for c in q.split(QUERY_ROWS, dim=-2)], dim=-2)


class Attention(nn.Module):
    """q: (B, Nq, C), k/v: (B, Nk, C_kv) -> (B, Nq, C); internal width C / downsample_rate."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        downsample_rate: int = 1,
        kv_in_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide the internal dimension")
        self.num_heads = num_heads
        kv_in_dim = kv_in_dim or embedding_dim
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.v_proj = nn.Linear(kv_in_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, heads, N, D)."""
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def project(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.split_heads(self.q_proj(q)), self.split_heads(self.k_proj(k)), self.split_heads(self.v_proj(v))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Per-head inputs (B, heads, N, D) -> output projection of the merged heads (B, Nq, C)."""
        out = attention(q, k, v)
        b, h, n, d = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """A batch of 1 on one side and B on the other is broadcast after the projections: inputs the same for
        every batch element are projected once."""
        q, k, v = self.project(q, k, v)
        if k.shape[0] == 1 and q.shape[0] != 1:
            k, v = k.expand(q.shape[0], -1, -1, -1), v.expand(q.shape[0], -1, -1, -1)
        elif q.shape[0] == 1 and k.shape[0] != 1:
            q = q.expand(k.shape[0], -1, -1, -1)
        return self.attend(q, k, v)
