"""RepViT trunk (Wang et al., 2024: "RepViT: Revisiting Mobile CNN From ViT Perspective"), as EdgeTAM uses it.

A convolutional stem (stride 4) and four stages of RepViT blocks: a depth-wise 3x3 "token mixer" with
parallel 1x1 and identity branches (structurally re-parameterizable into one 3x3 convolution), squeeze-and-
excitation on every other block, and a 1x1 "channel mixer" MLP. Stages 1-3 begin by halving the resolution
(a depth-wise stride-2 convolution) and widening the channels. Module and parameter names are timm's
(`repvit_m1.dist_in1k` with `features_only=True`: `stem`, `stages_0` ... `stages_3`), so EdgeTAM's
checkpoints load as they are.

`fuse()` folds every batch norm into the convolution before it and the token mixer's three branches into
one convolution (the same numbers up to float rounding, fewer layers): what a CPU wants at inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vos.config import RepViTConfig

SE_RATIO = 0.25
SE_DIVISOR = 8


def _divisible(value: float, divisor: int = SE_DIVISOR) -> int:
    """timm's `make_divisible` with `round_limit=0`: the nearest multiple of `divisor` (at least `divisor`)."""
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


class ConvNorm(nn.Sequential):
    """Convolution without bias + batch norm (`c`, `bn`); `fuse()` -> one convolution with bias."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.add_module("c", nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(c_out))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        conv, bn = self.c, self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          groups=conv.groups, bias=True, device=conv.weight.device)  # fmt: skip
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        return fused


class RepVggDw(nn.Module):
    """Token mixer: depth-wise 3x3 conv + depth-wise 1x1 conv + identity (each with its batch norm)."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.conv = ConvNorm(dim, dim, kernel, groups=dim)
        self.conv1 = ConvNorm(dim, dim, 1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.conv1(x) + x

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        conv, conv1 = self.conv.fuse(), self.conv1.fuse()
        k = conv.kernel_size[0]
        pad = (k - 1) // 2
        identity = torch.zeros_like(conv.weight)
        identity[:, :, pad, pad] = 1.0
        conv.weight.add_(F.pad(conv1.weight, [pad] * 4) + identity)
        conv.bias.add_(conv1.bias)
        return conv


class SqueezeExcite(nn.Module):
    """Channel gates from the global mean: x * sigmoid(fc2(relu(fc1(mean(x)))))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        hidden = _divisible(dim * SE_RATIO)
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class RepVitMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(dim, hidden)
        self.act = nn.GELU()
        self.conv2 = ConvNorm(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class RepViTBlock(nn.Module):
    def __init__(self, dim: int, mlp_ratio: int, kernel: int, use_se: bool) -> None:
        super().__init__()
        self.token_mixer = RepVggDw(dim, kernel)
        self.se = SqueezeExcite(dim) if use_se else nn.Identity()
        self.channel_mixer = RepVitMlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.channel_mixer(x)


class RepVitStem(nn.Module):
    """(B, 3, S, S) -> (B, C_0, S/4, S/4): two stride-2 3x3 convolutions."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = ConvNorm(c_in, c_out // 2, 3, 2)
        self.act1 = nn.GELU()
        self.conv2 = ConvNorm(c_out // 2, c_out, 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act1(self.conv1(x)))


class RepVitDownsample(nn.Module):
    """A block, then a depth-wise stride-2 convolution, a 1x1 widening and an MLP (residual)."""

    def __init__(self, c_in: int, mlp_ratio: int, c_out: int, kernel: int) -> None:
        super().__init__()
        self.pre_block = RepViTBlock(c_in, mlp_ratio, kernel, use_se=False)
        self.spatial_downsample = ConvNorm(c_in, c_in, kernel, 2, groups=c_in)
        self.channel_downsample = ConvNorm(c_in, c_out)
        self.ffn = RepVitMlp(c_out, c_out * mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(self.pre_block(x)))
        return x + self.ffn(x)


class RepVitStage(nn.Module):
    def __init__(self, c_in: int, c_out: int, depth: int, mlp_ratio: int, kernel: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = RepVitDownsample(c_in, mlp_ratio, c_out, kernel) if downsample else nn.Identity()
        self.blocks = nn.Sequential(*(RepViTBlock(c_out, mlp_ratio, kernel, use_se=i % 2 == 0) for i in range(depth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class _Body(nn.Module):
    """timm's feature extractor layout: `stem`, then `stages_0` ... (one attribute per stage)."""

    def __init__(self, cfg: RepViTConfig) -> None:
        super().__init__()
        self.stem = RepVitStem(3, cfg.embed_dims[0])
        c_in = cfg.embed_dims[0]
        for i, (c_out, depth) in enumerate(zip(cfg.embed_dims, cfg.depths)):
            stage = RepVitStage(c_in, c_out, depth, cfg.mlp_ratio, cfg.kernel_size, downsample=i > 0)
            self.add_module(f"stages_{i}", stage)
            c_in = c_out
        self.num_stages = len(cfg.embed_dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for i in range(self.num_stages):
            x = getattr(self, f"stages_{i}")(x)
            out.append(x)
        return out


class RepViT(nn.Module):
    """(B, 3, S, S) -> stage maps (B, C_i, S/4/2^i, S/4/2^i), highest resolution first."""

    def __init__(self, cfg: RepViTConfig) -> None:
        super().__init__()
        self.body = _Body(cfg)
        self.channel_list = list(cfg.embed_dims[::-1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)

    @torch.no_grad()
    def fuse(self) -> RepViT:
        """Folds batch norms and the token mixers' branches into single convolutions, in place; returns self."""
        _fuse_children(self)
        return self


def _fuse_children(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (ConvNorm, RepVggDw)):
            setattr(module, name, child.fuse())
        else:
            _fuse_children(child)
