"""Multi-head attention with an optional down-projection of the internal width (SAM's `Attention`).

The two-way transformer's cross-attentions pair a few tokens (n: output and prompt tokens) with many image tokens
(L). `few_to_many` and `many_to_few` compute them with the projections on the image side reassociated onto the
tokens (a projection is linear, a softmax row sums to 1): the image tokens meet one (L, C) x (C, heads * n)
product each way instead of two (L, C) x (C, C / r) projections and a per-head attention, about half the work and
none of the per-head reshuffling of L-long tensors. The same function, rounded otherwise."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vos.modeling.common import exporting

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


def softmax_short(x: torch.Tensor) -> torch.Tensor:
    """Softmax over a short last axis (a few tokens): torch's kernel takes 5x as long on rows of 8 on a CPU."""
    e = (x - x.amax(-1, keepdim=True)).exp_()
    return e / e.sum(-1, keepdim=True)


SHIFT_FLOOR = 1e-30
"""Smallest head sum `softmax_per_head` accepts: e^-69, far above float32's (and bfloat16's) smallest normal 1e-38."""


def softmax_per_head(scores: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., heads * n) scores -> each head's softmax over its n scores, same shape. Every head is shifted by the row's
    maximum over all heads (softmax does not change) and summed by a product with a block-diagonal matrix of ones:
    whole-row passes, where per-head reductions and broadcasts over rows of n (8) take several times as long. A
    head far below the row's maximum (its sum under SHIFT_FLOOR, near underflow) sends the rows to `softmax_short`."""
    e = (scores - scores.amax(-1, keepdim=True)).exp_()
    n = scores.shape[-1] // heads
    ones = torch.ones(n, n, dtype=e.dtype, device=e.device)
    sums = e @ torch.kron(torch.eye(heads, dtype=e.dtype, device=e.device), ones)
    if sums.amin() < SHIFT_FLOOR:
        return softmax_short(scores.unflatten(-1, (heads, n))).flatten(-2)
    return e.div_(sums)


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

    def cross(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """`residual` plus a cross-attention between tokens and image tokens, as `forward`, reassociated
        (`few_to_many` or `many_to_few`, by which side is shorter). Exported graphs, and quantized projections
        (int8: no weight matrix to reassociate), keep the plain form."""
        plain = any(type(p) is not nn.Linear for p in (self.q_proj, self.k_proj, self.v_proj, self.out_proj))
        if plain or exporting():
            return residual + self(q, k, v)
        if q.shape[1] < k.shape[1]:
            return residual + self.few_to_many(q, k, v)
        return self.many_to_few(q, k, v, residual)

    def _heads_of(self, proj: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
        """A projection's weight (heads, D, C_in) and bias (heads, D), D the per-head width."""
        h = self.num_heads
        return proj.weight.view(h, -1, proj.in_features), proj.bias.view(h, -1)

    def few_to_many(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Few queries over many keys: q (B, n, C), k and v (B or 1, L, C_kv) -> (B, n, C), as `forward`. Scores are
        k . (W_k,h^T q_h) + q_h . b_k,h (L x C_kv products, no key projection), made as (L, heads * n) so that the
        image tokens are never transposed; values mix before their projection. One image for B prompts is one
        product over all B prompts' rows."""
        b, n, _ = q.shape
        h = self.num_heads
        qh = self.q_proj(q).view(b, n, h, -1)
        qh = qh * qh.shape[-1] ** -0.5
        wk, bk = self._heads_of(self.k_proj)
        wv, bv = self._heads_of(self.v_proj)
        keys = torch.einsum("bnhd,hdc->bhnc", qh, wk).reshape(b, h * n, -1)
        bias = torch.einsum("bnhd,hd->bhn", qh, bk).reshape(b, 1, h * n)
        if k.shape[0] == 1 < b:
            keys, bias = keys.reshape(1, b * h * n, -1), bias.reshape(1, 1, -1)
        scores = (k @ keys.transpose(1, 2)).add_(bias)  # (B or 1, L, heads * n [* B])
        mixed = torch.softmax(scores, dim=1).transpose(1, 2) @ v
        out = torch.einsum("bhnc,hdc->bnhd", mixed.view(b, h, n, -1), wv) + bv
        return self.out_proj(out.reshape(b, n, -1))

    def many_to_few(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Many queries over few keys: q (B or 1, L, C), k and v (B, n, C_kv), residual (B or 1, L, C) -> residual +
        `forward` (B, L, C). Scores are q . (W_q,h^T k_h) + b_q,h . k_h (no query projection); each head's value is
        put through the output projection before the mix (no per-head output to merge), and the output bias is
        spread over the heads' values (each head's weights sum to 1), so that the residual is the product's addend:
        one pass over the (B, L, C) output."""
        b, n, _ = k.shape
        h = self.num_heads
        kh = self.k_proj(k).view(b, n, h, -1)
        kh = kh * kh.shape[-1] ** -0.5
        wq, bq = self._heads_of(self.q_proj)
        keys = torch.einsum("hdc,bnhd->bchn", wq, kh).reshape(b, -1, h * n)
        scores = q @ keys + torch.einsum("hd,bnhd->bhn", bq, kh).reshape(b, 1, h * n)
        weights = softmax_per_head(scores, h)  # (B, L, heads * n)
        wo = self.out_proj.weight.view(-1, h, self.internal_dim // h)
        values = torch.einsum("ohd,bnhd->bhno", wo, self.v_proj(v).view(b, n, h, -1)).reshape(b, h * n, -1)
        values = values + self.out_proj.bias / h
        return torch.baddbmm(residual, weights, values)
