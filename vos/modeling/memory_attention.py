"""Memory attention: conditions the current frame's features on the memory bank.

Each layer: self-attention over the current frame's tokens, cross-attention from them
to the memory tokens (spatial memories of past frames, then object pointers), and an
MLP. Spatial tokens carry 2-D RoPE; object-pointer tokens (the last
`num_k_exclude_rope` keys) do not.

Shapes: see `vos.modeling`; N = E*E tokens of the current frame, M memory tokens.

Two exact savings over attending to freshly projected memory (equal up to float rounding):
- The keys of a memory token depend only on that token, so they are projected and rotated
  per layer once (`project_memory`) and reused by every later frame that reads it
  (`ProjectedMemory`); the frame's temporal slot adds a per-slot term to its keys
  (`slot_keys`), because the key projection is linear and RoPE is a rotation.
- Values are an affine map of C_mem-channel tokens and attention weights sum to 1, so
  softmax(QK^T) (X W_v^T + b) = (softmax(QK^T) X) W_v^T + b: on CPUs the weights mix the
  C_mem = 64 channel tokens and the value projection follows (4x fewer FLOPs in the second
  product than attending to C = 256 channel values), blocked over queries and keys with an
  online softmax (`mix_tokens`). CUDA keeps fused SDPA on projected values.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vos.config import MemoryAttentionConfig
from vos.modeling.attention import Attention
from vos.modeling.common import exporting
from vos.modeling.rope import apply_rope, axial_rope_tables, linear_rotated

POS_ENC_AT_INPUT_SCALE = 0.1
QUERY_CHUNK = 1024  # query rows per step of the CPU cross-attention
KEY_BLOCK = 1024  # memory tokens per step: a (QUERY_CHUNK, KEY_BLOCK) score block stays in cache
_scratch = threading.local()  # per thread: the score block, reused across calls


@dataclass
class ProjectedMemory:
    """Memory tokens as every layer's cross-attention reads them.

    keys: per layer (B, heads, M, D), spatial tokens rotated (RoPE) and without their temporal-slot
    term; tokens: (B, M, C_mem) float32, the values' input; bias: (M,) float32 added to every query's
    attention logits for each token (pooled memory), or None.
    """

    keys: list[torch.Tensor]
    tokens: torch.Tensor
    bias: torch.Tensor | None = None

    def __getitem__(self, index: slice | int) -> ProjectedMemory:
        """The memory of some objects: index along B."""
        index = slice(index, index + 1) if isinstance(index, int) else index
        return ProjectedMemory([k[index] for k in self.keys], self.tokens[index], self.bias)

    def __iter__(self):
        """Each object's memory (slicing alone would never end an iteration)."""
        return (self[i] for i in range(self.tokens.shape[0]))


def _score_buffer(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A (rows, cols) scratch matrix of this thread, grown when needed and kept (no page faults per call)."""
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.numel() < rows * cols or buf.dtype != dtype or buf.device != device:
        buf = _scratch.buf = torch.empty(rows * cols, dtype=dtype, device=device)
    return buf[: rows * cols].view(rows, cols)


def _mix_rows(
    q: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor, out: torch.Tensor, scores: torch.Tensor,
    bias: torch.Tensor | None,
) -> None:  # fmt: skip
    """out (N, C_mem) float32 = softmax(q keys^T + bias) tokens for q (N, D) already scaled, keys (M, D), tokens
    (M, C_mem), bias (M,) or None.

    Online softmax over blocks of KEY_BLOCK keys: each block's scores are made, exponentiated
    and mixed while in cache; what earlier blocks added is rescaled when a row's maximum grows.
    Row maxima keep the scores' dtype (exact: a maximum is one of the values); sums are float32.
    """
    top = total = None
    for start in range(0, keys.shape[0], KEY_BLOCK):
        k, x = keys[start : start + KEY_BLOCK], tokens[start : start + KEY_BLOCK]
        s = scores[: q.shape[0], : k.shape[0]]
        torch.mm(q, k.t(), out=s)
        if bias is not None:
            s.add_(bias[start : start + KEY_BLOCK])
        block_top = s.amax(-1, keepdim=True)
        if top is None:
            top = block_top
            s.sub_(top).exp_()
            total = s.sum(-1, keepdim=True, dtype=torch.float32)
            out.zero_()
        else:
            new_top = torch.maximum(top, block_top)
            rescale = (top.float() - new_top.float()).exp_()
            s.sub_(new_top).exp_()
            total.mul_(rescale).add_(s.sum(-1, keepdim=True, dtype=torch.float32))
            out.mul_(rescale)
            top = new_top
        if out.dtype == s.dtype:
            out.addmm_(s, x)
        else:
            out.add_(s @ x)
    out.div_(total)


@torch.compiler.disable
def mix_tokens(
    queries: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(D) + bias) X per head: queries (B, heads, N, D), keys (B, heads, M, D), tokens
    (B, M, C_mem), bias (M,) or None -> (B, heads, N, C_mem).

    Equal to attention up to float rounding; blocked over queries and keys so that no (N, M)
    score matrix goes through memory (25-40 % faster than whole score rows on a 2-core AVX2 CPU).
    """
    b, h, n, d = queries.shape
    dtype = queries.dtype
    q = queries * d**-0.5
    out = torch.empty(b, h, n, tokens.shape[-1], dtype=torch.float32, device=q.device)
    scores = _score_buffer(min(n, QUERY_CHUNK), min(keys.shape[2], KEY_BLOCK), dtype, q.device)
    bias = None if bias is None else bias.to(dtype)
    for i in range(b):
        x = tokens[i].to(dtype)
        for j in range(h):
            k = keys[i, j].to(dtype)
            for start in range(0, n, QUERY_CHUNK):
                _mix_rows(q[i, j, start : start + QUERY_CHUNK], k, x, out[i, j, start : start + QUERY_CHUNK], scores, bias)
    return out.to(dtype)


@dataclass(frozen=True)
class KeyLayout:
    """How the keys of one memory frame are rotated: its first `unrotated` tokens not at all, the rest on a `grid` x
    `grid` grid (None: the queries' grid). SAM 2: all E*E tokens on the queries' grid; EdgeTAM: the perceiver's global
    latents unrotated, its 2-D latents on their G x G grid."""

    unrotated: int = 0
    grid: int | None = None


class RoPEAttention(Attention):
    """Attention with 2-D RoPE on queries and on the keys of spatial tokens (laid out as `key_layout` says)."""

    def __init__(self, *args, rope_theta: float, feat_size: int, key_layout: KeyLayout = KeyLayout(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rope_theta = rope_theta
        self.key_layout = key_layout
        self._set_tables(feat_size)
        if key_layout.grid is not None:
            cos, sin = axial_rope_tables(self.internal_dim // self.num_heads, key_layout.grid, key_layout.grid, rope_theta)
            self.register_buffer("key_cos", cos, persistent=False)
            self.register_buffer("key_sin", sin, persistent=False)

    def _set_tables(self, side: int, device: torch.device | None = None) -> None:
        cos, sin = axial_rope_tables(self.internal_dim // self.num_heads, side, side, self.rope_theta)
        self.register_buffer("rope_cos", cos.to(device), persistent=False)
        self.register_buffer("rope_sin", sin.to(device), persistent=False)

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens of one frame -> rotated per-head queries (B, heads, N, D)."""
        n = x.shape[-2]
        if self.rope_cos.shape[0] != n:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError("RoPE attention expects a square token grid")
            self._set_tables(side, x.device)
        if exporting():
            return self.split_heads(linear_rotated(x, self.q_proj, self.rope_cos, self.rope_sin))
        return apply_rope(self.split_heads(self.q_proj(x)), self.rope_cos, self.rope_sin)

    def project_keys(self, k: torch.Tensor, rotate: bool) -> torch.Tensor:
        """Key inputs (B, M, C_kv) -> per-head keys (B, heads, M, D), rotated (`rotate_frame`: M a whole number of
        frames) if `rotate`."""
        if rotate and exporting():
            return self.split_heads(linear_rotated(k, self.k_proj, *self.frame_tables()))
        keys = self.split_heads(self.k_proj(k))
        return self.rotate_frame(keys) if rotate else keys

    def frame_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin (N, D/2) for the N tokens of one memory frame as `key_layout` says: the grid the queries last
        had when it names none; angle 0 for the unrotated tokens."""
        layout = self.key_layout
        cos, sin = (self.key_cos, self.key_sin) if layout.grid is not None else (self.rope_cos, self.rope_sin)
        if not layout.unrotated:
            return cos, sin
        return (torch.cat((cos.new_ones(layout.unrotated, cos.shape[1]), cos)),
                torch.cat((sin.new_zeros(layout.unrotated, sin.shape[1]), sin)))  # fmt: skip

    def rotate_frame(self, keys: torch.Tensor) -> torch.Tensor:
        """Per-head keys (..., M, D) of memory frames (M a whole number of them), rotated as `key_layout` says."""
        return apply_rope(keys, *self.frame_tables())

    def attend_tokens(
        self, queries: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross-attention: per-head queries (B, heads, N, D), keys (B, heads, M, D), the values' input tokens
        (B, M, C_kv) and an (M,) logit bias or None -> (B, N, C)."""
        if exporting():  # mix_tokens' Python loops do not trace to a graph; the same mixing by SDPA
            mask = None if bias is None else bias.to(queries.dtype).view(1, -1)
            mixed = F.scaled_dot_product_attention(
                queries, keys, tokens[:, None].expand(-1, self.num_heads, -1, -1), attn_mask=mask
            )  # (B, heads, N, C_kv)
        elif queries.device.type != "cpu":
            values = self.split_heads(self.v_proj(tokens))
            if bias is None:
                return self.attend(queries, keys, values)
            out = F.scaled_dot_product_attention(queries, keys, values, attn_mask=bias.to(queries.dtype).view(1, -1))
            b, h, n, d = out.shape
            return self.out_proj(out.transpose(1, 2).reshape(b, n, h * d))
        else:
            mixed = mix_tokens(queries, keys, tokens, bias)  # (B, heads, N, C_kv)
        h, d = self.num_heads, self.internal_dim // self.num_heads
        weight = self.v_proj.weight.view(h, d, -1)
        values = torch.einsum("bhnc,hdc->bnhd", mixed, weight.to(mixed.dtype)) + self.v_proj.bias.view(h, d)
        return self.out_proj(values.flatten(2))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Self-attention of a frame's (B, N, C) tokens."""
        return self.attend(self.queries(q), self.project_keys(k, rotate=True), self.split_heads(self.v_proj(v)))


class MemoryAttentionLayer(nn.Module):
    def __init__(self, cfg: MemoryAttentionConfig, d_model: int, mem_dim: int, feat_size: int, key_layout: KeyLayout) -> None:
        super().__init__()
        self.cfg = cfg
        self.self_attn = RoPEAttention(d_model, cfg.num_heads, rope_theta=cfg.rope_theta, feat_size=feat_size)
        self.cross_attn_image = RoPEAttention(
            d_model, cfg.num_heads, kv_in_dim=mem_dim, rope_theta=cfg.rope_theta, feat_size=feat_size,
            key_layout=key_layout,
        )  # fmt: skip
        self.linear1 = nn.Linear(d_model, cfg.dim_feedforward)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.activation = {"relu": F.relu_, "gelu": F.gelu}[cfg.activation]

    def forward(
        self, tgt: torch.Tensor, query_pos: torch.Tensor, keys: torch.Tensor, tokens: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """tgt (B or 1, N, C) with query_pos (1, N, C); keys (B, heads, M, D), value tokens (B, M, C_mem), logit bias
        (M,) or None -> (B, N, C).

        One `tgt` row when every object starts from the same features (the first layer): then
        everything up to the cross-attention's queries runs once, for all objects.
        """
        x = self.norm1(tgt)
        q = x + query_pos if self.cfg.pos_enc_at_attn else x
        tgt = tgt + self.self_attn(q, q, x)

        x = self.norm2(tgt)
        queries = self.cross_attn_image.queries(x + query_pos if self.cfg.pos_enc_at_cross_attn_queries else x)
        b = keys.shape[0]
        tgt = tgt + self.cross_attn_image.attend_tokens(queries.expand(b, -1, -1, -1), keys, tokens, bias)
        x = self.norm3(tgt)
        return tgt + self.linear2(self.activation(self.linear1(x)))


class MemoryAttention(nn.Module):
    """Current-frame tokens + projected memory -> memory-conditioned tokens."""

    def __init__(
        self, cfg: MemoryAttentionConfig, d_model: int, mem_dim: int, feat_size: int, key_layout: KeyLayout = KeyLayout()
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.pos_enc_at_input = cfg.pos_enc_at_input
        self.layers = nn.ModuleList(
            MemoryAttentionLayer(cfg, d_model, mem_dim, feat_size, key_layout) for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def project_memory(self, memory: torch.Tensor, memory_pos: torch.Tensor | None, rotate: bool) -> ProjectedMemory:
        """Memory tokens (B, M, C_mem) and their key position encodings (B or 1, M, C_mem) -> every layer's keys.

        `rotate`: spatial tokens of one frame (keys get RoPE as the layout says) or object pointers (no RoPE).
        """
        key_in = memory if memory_pos is None or not self.cfg.pos_enc_at_cross_attn_keys else memory + memory_pos
        return ProjectedMemory([layer.cross_attn_image.project_keys(key_in, rotate) for layer in self.layers], memory.float())

    def slot_keys(self, slot_pos: torch.Tensor, num_tokens: int) -> list[torch.Tensor] | None:
        """What a temporal-slot embedding adds to the keys of a frame's tokens, per layer.

        slot_pos (T, C_mem) -> per layer (T, heads, N, D): the rotated key projection of the
        embedding alone (no bias), N = num_tokens grid positions. None when keys take no position.
        """
        if not self.cfg.pos_enc_at_cross_attn_keys:
            return None
        out = []
        for layer in self.layers:
            attn = layer.cross_attn_image
            slot_k = F.linear(slot_pos, attn.k_proj.weight.to(slot_pos.dtype))
            k = attn.split_heads(slot_k[:, None].expand(-1, num_tokens, -1))
            out.append(attn.rotate_frame(k))
        return out

    def forward(self, curr: torch.Tensor, curr_pos: torch.Tensor, memory: ProjectedMemory) -> torch.Tensor:
        """curr (B or 1, N, C) and its sine encoding (1, N, C), memory for B objects -> (B, N, C).

        A single `curr` row is shared by all B objects (one image, several objects).
        """
        out = curr + POS_ENC_AT_INPUT_SCALE * curr_pos if self.pos_enc_at_input else curr
        for layer, keys in zip(self.layers, memory.keys):
            out = layer(out, curr_pos, keys, memory.tokens, memory.bias)
        return self.norm(out)

    def pools(self, frames: int) -> bool:
        """Whether memory of this many spatial frames is read pooled (`pool_frames`): EfficientTAM's _1 / _2 models
        pool two frames or more."""
        return self.cfg.memory_pool > 1 and frames > 1

    def pool_frames(self, memory: ProjectedMemory, frames: int, side: int) -> ProjectedMemory:
        """EfficientTAM's coarse memory: the first `frames` spatial memories (side x side tokens each) averaged over
        `memory_pool` x `memory_pool` cells, keys and value tokens alike (the value projection is affine: pooling
        its input equals pooling its output), each pooled key biased as `memory_pool_bias` says; the object-pointer
        tokens after them as they are."""
        p, n = self.cfg.memory_pool, frames * side * side

        def pool(x: torch.Tensor, shift: float = 0.0) -> torch.Tensor:  # (..., M, C) -> (..., M - n + n / p^2, C)
            lead, c = x.shape[:-2], x.shape[-1]
            grid = x[..., :n, :].reshape(-1, side, side, c).permute(0, 3, 1, 2)
            pooled = F.avg_pool2d(grid, p).permute(0, 2, 3, 1).reshape(*lead, -1, c) + shift
            return torch.cat((pooled, x[..., n:, :]), dim=-2)

        weight = 2 * math.log(p)  # log of the p^2 tokens a pooled one stands for
        tokens = pool(memory.tokens)
        key_shift = weight if self.cfg.memory_pool_bias == "keys" else 0.0
        bias = None
        if self.cfg.memory_pool_bias == "logits":
            bias = tokens.new_zeros(tokens.shape[-2], dtype=torch.float32)
            bias[: n // p**2] = weight
        return ProjectedMemory([pool(k, key_shift) for k in memory.keys], tokens, bias)
