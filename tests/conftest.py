"""Shared fixtures: the DAVIS frames (tests/data, or $VOS_DAVIS_ROOT) and Meta's reference model with random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.data_paths import DEFAULT_DAVIS, require_davis  # noqa: F401  (DEFAULT_DAVIS: the benchmarks' default)

META_CONFIGS = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}
SEED = 1234


@pytest.fixture(scope="session")
def davis_root() -> Path:
    """The DAVIS root with frames and annotations."""
    return require_davis("JPEGImages/480p", "Annotations/480p")


def read_frame(davis_root: Path, sequence: str, index: int) -> np.ndarray:
    """HxWx3 uint8 RGB frame of a DAVIS sequence."""
    return np.array(Image.open(davis_root / "JPEGImages" / "480p" / sequence / f"{index:05d}.jpg").convert("RGB"))


def build_meta(name: str, image_size: int = 1024, seed: int | None = SEED, device: str = "cpu"):
    """Meta's SAM2Base for a config with random weights from `seed` (None: keep the global RNG)."""
    from sam2.build_sam import build_sam2

    if seed is not None:
        torch.manual_seed(seed)
    overrides = [f"++model.image_size={image_size}"] if image_size != 1024 else []
    return build_sam2(META_CONFIGS[name], ckpt_path=None, device=device, hydra_overrides_extra=overrides)


def save_meta_checkpoint(model: torch.nn.Module, path: Path) -> Path:
    """Write a state dict in Meta's released format: {"model": state_dict}."""
    torch.save({"model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """Random sam2.1_hiera_t weights saved by Meta's code in Meta's format."""
    model = build_meta("sam2.1_hiera_t")
    return save_meta_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt")


@pytest.fixture(scope="session")
def meta_tiny(tiny_checkpoint):
    """Meta's tiny model at 1024 and 512 px with the weights of `tiny_checkpoint`."""
    sd = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["model"]
    models = {}
    for size in (1024, 512):
        m = build_meta("sam2.1_hiera_t", size, seed=None)
        m.load_state_dict(sd)
        models[size] = m.eval()
    return models


# Random weights put the object score just below 0, so every tracked frame would be judged
# object-free and its logits replaced by a constant: useless for comparing trackers. This
from vos.checkpoints import OBJECT_SCORE_BIAS_OFFSET  # noqa: E402  (objects present with random weights)


@pytest.fixture(scope="session")
def tracking_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """`tiny_checkpoint` with the object-score head biased towards "present"."""
    sd = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["model"]
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += OBJECT_SCORE_BIAS_OFFSET
    path = tmp_path_factory.mktemp("ckpt_tracking") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sd}, path)
    return path

from tests.mqtt_broker import broker  # noqa: E402, F401  (a Mosquitto broker per test)
from tests.rtsp_fixtures import rtsp_clip, rtsp_server  # noqa: E402, F401  (fixtures for the live-source tests)
