"""Image preprocessing and mask postprocessing, equal to Meta's SAM 2 transforms.

Meta resizes differently in its two predictors, and vos follows each:
- video (`Tracker`, `VideoSession`, the engine, `vos bench davis`): `preprocess_video_frame`, as Meta's
  video predictor loads frames: PIL bicubic resize of the uint8 RGB frame to S x S, then /255 and
  ImageNet normalization;
- images (`ImagePredictor`): `preprocess_image`, as Meta's image predictor: /255, then torchvision's
  Resize on the float tensor (bilinear, antialiased), then normalization.
The two give different tensors for frames that are not already S x S, hence different masks.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PIXEL_MAX = 255.0


def check_rgb_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an HxWx3 uint8 numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError("image is empty")


def preprocess_image(image: np.ndarray, image_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """HxWx3 uint8 RGB -> (1, 3, S, S) float32: /255, resized straight to S x S (bilinear, antialiased,
    aspect not kept, as torchvision's Resize on a tensor), then ImageNet-normalized.

    An image that is already S x S is not resampled.
    """
    check_rgb_image(image)
    x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1)[None].float() / PIXEL_MAX
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return _normalize(x)


def preprocess_video_frame(frame: np.ndarray, image_size: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """HxWx3 uint8 RGB -> (1, 3, S, S) float32, as Meta's video predictor: PIL bicubic resize to S x S
    (aspect not kept; a frame already S x S is unchanged), /255, then ImageNet-normalized."""
    check_rgb_image(frame)
    if frame.shape[:2] != (image_size, image_size):
        frame = np.array(Image.fromarray(frame).resize((image_size, image_size), Image.Resampling.BICUBIC))
    x = torch.from_numpy(np.ascontiguousarray(frame)).to(device).permute(2, 0, 1)[None].float() / PIXEL_MAX
    return _normalize(x)


def _normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def to_input_frame(coords: torch.Tensor, hw: tuple[int, int], image_size: int) -> torch.Tensor:
    """(..., 2) pixel (x, y) of an (H, W) image -> pixels of the model's S x S input (divide, then scale, as Meta)."""
    h, w = hw
    return coords / torch.tensor([w, h], dtype=coords.dtype, device=coords.device) * image_size


def upscale_logits(logits: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, K, H', W') mask logits -> (B, K, H, W) at the original image size (bilinear)."""
    return F.interpolate(logits.float(), size=hw, mode="bilinear", align_corners=False)
