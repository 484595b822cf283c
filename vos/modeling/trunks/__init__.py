"""Image-encoder trunks, one module each; a model config names its trunk by `trunk.kind`.

Every trunk maps (B, 3, S, S) images to its stage maps, highest resolution first, and lists their
channels in `channel_list` (lowest resolution first, the neck's order).
"""

from __future__ import annotations

from torch import nn

from vos.config import TrunkConfig
from vos.modeling.trunks.hiera import Hiera
from vos.modeling.trunks.repvit import RepViT
from vos.modeling.trunks.vit import ViT

TRUNKS: dict[str, type[nn.Module]] = {"hiera": Hiera, "repvit": RepViT, "vit": ViT}


def build_trunk(cfg: TrunkConfig) -> nn.Module:
    """The trunk module `cfg.kind` names."""
    return TRUNKS[cfg.kind](cfg)
