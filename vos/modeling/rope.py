"""2-D axial rotary position encoding (RoPE) in real arithmetic.

The first half of each head's channel pairs is rotated by the token's x position, the
second half by its y position (Heo et al., 2024, "Rotary Position Embedding for Vision
Transformer"). Written with cos/sin tables instead of complex tensors so it traces to
ONNX; numerically it is the complex product (a + ib)(cos + i sin).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def axial_rope_tables(head_dim: int, end_x: int, end_y: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (end_x * end_y, head_dim / 2), tokens in row-major (y, x) order."""
    if head_dim % 4:
        raise ValueError("2-D RoPE needs a head dimension divisible by 4")
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim))
    t = torch.arange(end_x * end_y, dtype=torch.float32)
    t_x = t % end_x
    t_y = torch.div(t, end_x, rounding_mode="floor")
    angles = torch.cat([torch.outer(t_x, freqs), torch.outer(t_y, freqs)], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x (B, heads, N, D) by tables (N, D/2).

    When x has r times as many tokens as the tables (keys of r memory frames), the tables repeat.
    """
    n = x.shape[-2]
    if n != cos.shape[0]:
        reps = n // cos.shape[0]
        if reps * cos.shape[0] != n:
            raise ValueError(f"{n} tokens are not a whole number of {cos.shape[0]}-token frames")
        cos, sin = cos.repeat(reps, 1), sin.repeat(reps, 1)
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.flatten(-2).type_as(x)


def linear_rotated(x: torch.Tensor, linear: torch.nn.Linear, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`apply_rope` of a linear projection, folded into it, for graphs: x (..., M, C_in) -> (..., M, heads * D),
    each head's channel pairs rotated by tables (N, D/2) (repeated when M is a whole number of N-token frames).

    rotate(y) = y * cos + swap(y) * sin, where swap maps each pair (a, b) to (-b, a); swap(x W^T + b) is x W_s^T + b_s
    with the rows of W and b swapped so. Two matrix products and no shuffling of activations, which graph runtimes
    ran as slow copies (OpenVINO: a reference Concat or Slice per call); eager PyTorch keeps `apply_rope`.
    """
    weight, bias = linear.weight, linear.bias
    swapped_weight = torch.stack((-weight[1::2], weight[0::2]), dim=1).flatten(0, 1)
    swapped_bias = torch.stack((-bias[1::2], bias[0::2]), dim=1).flatten()
    heads = weight.shape[0] // (2 * cos.shape[-1])
    cos2, sin2 = (t.repeat_interleave(2, dim=-1).repeat(1, heads) for t in (cos, sin))  # (N, heads * D)
    frames = x.unflatten(-2, (-1, cos.shape[0]))  # (..., M / N, N, C_in): the tables broadcast, not tiled
    out = linear(frames) * cos2 + F.linear(frames, swapped_weight, swapped_bias) * sin2
    return out.flatten(-3, -2)
