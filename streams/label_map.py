"""Label maps: every object's mask of a frame in one (H, W) image whose pixel value is the object id.

Overlaps are resolved as Meta's non-overlapping constraint (`_apply_non_overlapping_constraints`),
on the output only: a pixel gets the id of the highest-logit object among those whose mask is
on there, background (0) where none is. Saved as DAVIS palette PNGs (ids up to 255) or 16-bit
grayscale PNGs (larger ids).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vos.errors import ConfigError

BACKGROUND_ID = 0
PALETTE_SIZE = 256
MAX_LABEL_ID = 2**16 - 1
PNG_COMPRESS_LEVEL = 3  # zlib level: a quarter of the default's (6) CPU time for ~1.6x the bytes of a mostly flat map
_COLOUR_BITS = 8
"""Bits per colour channel: the PASCAL VOC colour map spreads an id's bits over R, G and B from the top bit down."""


def davis_palette() -> list[int]:
    """The 256-colour PASCAL VOC / DAVIS 2017 palette, flat [r0, g0, b0, r1, ...] (id 1 red, 2 green, ...)."""
    palette: list[int] = []
    for index in range(PALETTE_SIZE):
        rgb = [0, 0, 0]
        value = index
        for bit in range(_COLOUR_BITS):
            for channel in range(3):
                rgb[channel] |= ((value >> channel) & 1) << (_COLOUR_BITS - 1 - bit)
            value >>= 3
        palette.extend(rgb)
    return palette


_PALETTE = davis_palette()


def merge_masks(masks: dict[int, np.ndarray], logits: dict[int, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) label map (uint8, or uint16 for ids > 255): per pixel, the highest-logit object whose mask is on.

    Ties go to the object listed first; a pixel whose mask is on is never background. One pass per
    object over the pixels (no (B, H, W) stack): it runs beside the model in the engine, on its cores.
    """
    if any(not 0 < k <= MAX_LABEL_ID for k in masks):
        raise ValueError(f"object ids in a label map must be 1..{MAX_LABEL_ID}, got {sorted(masks)}")
    dtype = np.uint8 if max(masks, default=0) < PALETTE_SIZE else np.uint16
    labels = np.full(shape, BACKGROUND_ID, dtype=dtype)
    best = np.full(shape, -np.inf, dtype=np.float32)
    for obj_id, mask in masks.items():
        wins = mask & ((logits[obj_id] > best) | (labels == BACKGROUND_ID))
        best[wins] = logits[obj_id][wins]
        labels[wins] = obj_id
    return labels


def write_label_map(path: Path, labels: np.ndarray) -> None:
    """Save an (H, W) label map: uint8 as a DAVIS palette PNG, uint16 as a 16-bit grayscale PNG."""
    if labels.dtype == np.uint8:
        image = Image.fromarray(labels)
        image.putpalette(_PALETTE)
    elif labels.dtype == np.uint16:
        image = Image.fromarray(labels.astype(np.int32)).convert("I;16")
    else:
        raise ValueError(f"label maps are uint8 or uint16, got {labels.dtype}")
    image.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def read_label_map(path: Path) -> np.ndarray:
    """A label map written by `write_label_map` (or any DAVIS annotation) as an (H, W) integer array."""
    with Image.open(path) as image:
        return np.array(image)


def read_mask_png(path: Path, obj_id: int) -> np.ndarray:
    """A mask prompt from a PNG: a binary image's nonzero pixels, or a label map's pixels equal to `obj_id`."""
    try:
        labels = read_label_map(path)
    except FileNotFoundError:
        raise ConfigError(f"mask of object {obj_id}: no such file {path}") from None
    except OSError as e:
        raise ConfigError(f"mask of object {obj_id}: cannot read {path} as an image: {e}") from None
    if labels.ndim == 3:
        labels = labels[..., :3].max(axis=2)
    values = set(np.unique(labels).tolist()) - {0}
    mask = labels != 0 if len(values) <= 1 else labels == obj_id
    if not mask.any():
        raise ConfigError(f"mask of object {obj_id}: {path} has no pixel of object {obj_id}")
    return mask
