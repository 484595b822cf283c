"""Small layers shared by several components."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def weights_key(*params: torch.Tensor) -> tuple:
    """What values computed from these parameters depend on: their storage and version counters.

    A cache keyed on it is refreshed when the weights are loaded or changed in place. Parameters
    made under inference mode have no version counter: only a new storage is seen there.
    """
    return tuple((p.device, p.data_ptr(), -1 if p.is_inference() else p._version) for p in params)


class MLP(nn.Module):
    """`num_layers` linear layers with an activation between them: (..., in) -> (..., out)."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = activation()
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = self.act(layer(x))
        x = self.layers[-1](x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, H, W) tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if exporting():  # one fused normalization over the last axis in graph runtimes (OpenVINO: MVN), not five ops
            return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def bilinear_matrix(n_in: int, n_out: int, device: torch.device | None = None) -> torch.Tensor:
    """(n_out, n_in): 1-D bilinear resizing as a matrix, as `F.interpolate(..., align_corners=False)` weighs the
    inputs; M @ X @ M^T resizes an (n_in, n_in) map to (n_out, n_out)."""
    eye = torch.eye(n_in, device=device)[None]  # each input sample alone, as a channel
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].t()


def exporting() -> bool:
    """Whether the model is being traced by `torch.export` (also under `vos export onnx`): code with Python loops
    over tensors takes its plain-tensor path then."""
    return torch.compiler.is_exporting()
