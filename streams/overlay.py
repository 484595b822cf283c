"""Overlay pictures of tracked objects (OpenCV): each mask as a translucent fill in its DAVIS palette colour,
its contour, and a caption with the object's id and score.

Shapes: H, W = the frame's height and width; images are (H, W, 3) uint8 RGB, label maps (H, W) integer
(pixel value = object id, 0 background), as the folder sink writes them.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vos.streams.label_map import BACKGROUND_ID, PALETTE_SIZE, davis_palette

_COLOURS = np.array(davis_palette(), dtype=np.uint8).reshape(PALETTE_SIZE, 3)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)


class OverlayStyle(BaseModel):
    """How overlays look; one setting each, shared by `vos track --render`, `vos render` and the web viewer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(0.5, ge=0.0, le=1.0, description="opacity of the mask fill")
    contour: int = Field(2, ge=0, le=16, description="contour thickness in pixels, inside the mask (0: none)")
    captions: bool = Field(True, description="caption each object with its id and object score")
    frame_info: bool = Field(True, description="the frame index (and frames/s when known) in the top-left corner")


def object_colour(obj_id: int) -> tuple[int, int, int]:
    """The RGB colour of an object: its DAVIS palette entry (ids above 255 wrap around, skipping black)."""
    index = obj_id if obj_id < PALETTE_SIZE else 1 + (obj_id - 1) % (PALETTE_SIZE - 1)
    return tuple(int(c) for c in _COLOURS[index])


def _present(labels: np.ndarray) -> list[int]:
    """The object ids in a label map, ascending."""
    counts = np.bincount(labels.ravel())
    return [int(i) for i in np.flatnonzero(counts) if i != BACKGROUND_ID]


def _palette_index(labels: np.ndarray) -> np.ndarray:
    """(H, W) uint8: each pixel's palette entry (`object_colour`'s wrap-around for ids above 255)."""
    if labels.dtype == np.uint8:
        return labels
    wrapped = np.where(labels < PALETTE_SIZE, labels, 1 + (labels.astype(np.int64) - 1) % (PALETTE_SIZE - 1))
    return wrapped.astype(np.uint8)


def _fill(image: np.ndarray, labels: np.ndarray, alpha: float) -> np.ndarray:
    """Every labelled pixel blended with its object's colour; background pixels untouched."""
    out = image.copy()
    if alpha == 0:
        return out
    index = _palette_index(labels)
    colours = cv2.LUT(cv2.merge([index, index, index]), _COLOURS[None])
    blended = cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0)
    cv2.copyTo(blended, (labels != BACKGROUND_ID).astype(np.uint8), out)
    return out


def _contours(out: np.ndarray, labels: np.ndarray, ids: list[int], thickness: int) -> None:
    """Each object's outline, drawn in its colour and clipped to its own pixels (in place)."""
    for obj_id in ids:
        mask = (labels == obj_id).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        line = np.zeros_like(mask)
        cv2.drawContours(line, contours, -1, 1, 2 * thickness)
        out[(line > 0) & (mask > 0)] = object_colour(obj_id)


Box = tuple[int, int, int, int]  # x0, y0, x1, y1


def _text_box(shape: tuple[int, ...], text: str, x: int, y: int, scale: float) -> Box:
    """Where `_text` draws `text` asked at (x, y) in an image of `shape`: (x0, y0, x1, y1), kept inside the image."""
    (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
    height, width = shape[:2]
    x = min(max(x, 0), max(width - w - 4, 0))
    y = min(max(y, 0), max(height - h - base - 4, 0))
    return x, y, x + w + 4, y + h + base + 4


def _text(out: np.ndarray, text: str, box: Box, background: tuple[int, int, int], scale: float) -> None:
    """`text` on a filled `box` (`_text_box`), in place."""
    x0, y0, x1, y1 = box
    (_, h), _ = cv2.getTextSize(text, _FONT, scale, 1)
    cv2.rectangle(out, (x0, y0), (x1, y1), background, -1)
    cv2.putText(out, text, (x0 + 2, y0 + h + 2), _FONT, scale, _WHITE, 1, cv2.LINE_AA)


def _overlaps(a: Box, b: Box | None) -> bool:
    return b is not None and a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    scores: Mapping[int, float] | None = None,
    style: OverlayStyle = OverlayStyle(),
    frame_index: int | None = None,
    fps: float | None = None,
    classes: Mapping[int, str] | None = None,
) -> np.ndarray:
    """The overlay of one frame: (H, W, 3) uint8 RGB `image` and its (H, W) label map -> a new (H, W, 3) image.

    `scores`: object score logits by id, shown in the captions (ids missing there are captioned by id alone);
    `classes`: class names by id (objects a detector found), shown after the id.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"an overlay needs an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    if labels.shape != image.shape[:2]:
        raise ValueError(f"label map {labels.shape} and image {image.shape[:2]} differ in size")
    ids = _present(labels)
    out = _fill(image, labels, style.alpha)
    if style.contour:
        _contours(out, labels, ids, style.contour)
    scale = max(0.4, image.shape[0] / 1000)
    info_box = None
    if style.frame_info and frame_index is not None:
        info = f"frame {frame_index}" + (f"  {fps:.1f} fps" if fps else "")
        info_box = _text_box(out.shape, info, 0, 0, scale)
    if style.captions:
        for obj_id in ids:
            x, y, _, _ = cv2.boundingRect((labels == obj_id).astype(np.uint8))
            score, name = (scores or {}).get(obj_id), (classes or {}).get(obj_id)
            text = str(obj_id) if name is None else f"{obj_id} {name}"
            text = text if score is None else f"{text}: {score:+.1f}"
            box = _text_box(out.shape, text, x, y - 20, scale)
            if _overlaps(box, info_box):  # below the frame info, not under it
                box = _text_box(out.shape, text, x, info_box[3] + 1, scale)
            _text(out, text, box, object_colour(obj_id), scale)
    if info_box is not None:
        _text(out, info, info_box, (0, 0, 0), scale)
    return out


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes (the viewer's pictures)."""
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as JPEG")
    return data.tobytes()
