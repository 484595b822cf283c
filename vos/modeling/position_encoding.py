"""Position encodings: 2-D sine (DETR style) for feature maps, random Fourier features for prompts,
and 1-D sine for temporal positions of object pointers."""

from __future__ import annotations

import math

import torch
from torch import nn

SINE_TEMPERATURE = 10000.0
SINE_NORMALIZE_EPS = 1e-6


def _sine_frequencies(num_feats: int, temperature: float, device: torch.device) -> torch.Tensor:
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * (dim_t // 2) / num_feats)


def _interleave_sin_cos(angles: torch.Tensor) -> torch.Tensor:
    """(..., C) angles -> (..., C): sin on even channels, cos on odd channels."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


class PositionEmbeddingSine(nn.Module):
    """Normalized 2-D sine encoding of a (B, C, H, W) map -> (B, num_pos_feats, H, W), cached per size."""

    def __init__(self, num_pos_feats: int, temperature: float = SINE_TEMPERATURE, scale: float = 2 * math.pi):
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError("num_pos_feats must be even")
        self.num_pos_feats = num_pos_feats // 2
        self.temperature = temperature
        self.scale = scale
        self._cache: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    @torch.no_grad()
    def encoding(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        key = (h, w, device)
        if key not in self._cache:
            y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
            x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
            y = y / (y[-1] + SINE_NORMALIZE_EPS) * self.scale
            x = x / (x[-1] + SINE_NORMALIZE_EPS) * self.scale
            dim_t = _sine_frequencies(self.num_pos_feats, self.temperature, device)
            pos_y = _interleave_sin_cos(y[:, None] / dim_t)[:, None, :].expand(h, w, -1)
            pos_x = _interleave_sin_cos(x[:, None] / dim_t)[None, :, :].expand(h, w, -1)
            self._cache[key] = torch.cat((pos_y, pos_x), dim=-1).permute(2, 0, 1).contiguous()
        return self._cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pe = self.encoding(x.shape[-2], x.shape[-1], x.device)
        return pe[None].expand(x.shape[0], -1, -1, -1).to(x.dtype)


class PositionEmbeddingRandom(nn.Module):
    """Random Fourier features of normalized (x, y) coordinates (Tancik et al., 2020), as in SAM."""

    def __init__(self, num_pos_feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, num_pos_feats)))

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """(..., 2) coords in [0, 1] -> (..., 2 * num_pos_feats)."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([coords.sin(), coords.cos()], dim=-1)

    def forward(self, size: tuple[int, int]) -> torch.Tensor:
        """Dense encoding of pixel centres of an (H, W) grid -> (C, H, W)."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        grid = torch.ones((h, w), device=device, dtype=torch.float32)
        y = (grid.cumsum(dim=0) - 0.5) / h
        x = (grid.cumsum(dim=1) - 0.5) / w
        return self._encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1)

    def forward_with_coords(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """(B, P, 2) pixel (x, y) coords of an (H, W) image -> (B, P, C)."""
        coords = coords.clone()
        coords[:, :, 0] = coords[:, :, 0] / image_size[1]
        coords[:, :, 1] = coords[:, :, 1] / image_size[0]
        return self._encode(coords.float())


def sine_encoding_1d(positions: torch.Tensor, dim: int, temperature: float = SINE_TEMPERATURE) -> torch.Tensor:
    """(N,) positions -> (N, dim): [sin(p / f_i) ..., cos(p / f_i) ...] (not interleaved)."""
    angles = positions.unsqueeze(-1) / _sine_frequencies(dim // 2, temperature, positions.device)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
