"""The annotation files: YOLO segmentation labels, COCO instances (RLE) and SA-V-style masklets.

- YOLO (Ultralytics' layout): one text file per image, a line per object, `class x1 y1 x2 y2 ...`: the class index
  (from 0) and the object's outline as a polygon, coordinates divided by the image's width and height.
- COCO instances: `images`, `annotations` (RLE `segmentation`, `bbox` x, y, w, h, `area`, `score`, and for videos
  `track_id`), `categories` (id = class index + 1, as COCO counts from 1).
- Masklets (SA-V's annotation layout): per clip `masklet_id`, `masklet_class`, and `masklet`, per frame a list of
  every object's RLE (an empty mask where it is not seen).
"""

from __future__ import annotations

import cv2
import numpy as np

from vos.streams.messages import Rle
from vos.tracking.detection import mask_box

DECIMALS = 6


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """The outline of an (H, W) bool mask's largest part as (K, 2) x, y pixel corners, K >= 3; None if there is
    none (an empty mask, or one too thin for a polygon)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea).reshape(-1, 2)
    return largest.astype(np.float32) if len(largest) >= 3 else None


def yolo_line(class_index: int, mask: np.ndarray) -> str | None:
    """One YOLO segmentation label line for an object's mask, or None when the mask has no polygon."""
    polygon = mask_polygon(mask)
    if polygon is None:
        return None
    h, w = mask.shape
    normalized = (polygon / np.float32([w, h])).clip(0, 1).reshape(-1)
    return f"{class_index} " + " ".join(f"{v:.{DECIMALS}f}" for v in normalized)


def coco_annotation(
    ann_id: int, image_id: int, mask: np.ndarray, class_index: int, score: float, rle: dict | None = None, **extra
) -> dict:
    """One COCO instance: RLE segmentation (`rle` when the caller already encoded the mask), bbox (x, y, w, h),
    area, score (the detector's)."""
    box = mask_box(mask)
    bbox = [0, 0, 0, 0] if box is None else [int(box[0]), int(box[1]), int(box[2] - box[0]), int(box[3] - box[1])]
    return {
        "id": ann_id, "image_id": image_id, "category_id": class_index + 1,
        "segmentation": rle or Rle.from_mask(mask).model_dump(mode="json"), "bbox": bbox, "area": int(mask.sum()),
        "iscrowd": 0, "score": round(float(score), 5), **extra,
    }  # fmt: skip


def coco_document(images: list[dict], annotations: list[dict], names: dict[int, str]) -> dict:
    """A COCO instances document; annotation ids renumbered 1..N in order."""
    numbered = [{**a, "id": i + 1} for i, a in enumerate(annotations)]
    categories = [{"id": k + 1, "name": v} for k, v in sorted(names.items())]
    return {"images": images, "annotations": numbered, "categories": categories}


def masklet_document(clip: str, hw: tuple[int, int], frames: list[dict[int, dict]], classes: dict[int, str]) -> dict:
    """SA-V-style masklets of a clip from per frame {object id: RLE dict}: every object on every frame."""
    ids = sorted(classes)
    empty = Rle.from_mask(np.zeros(hw, bool)).model_dump(mode="json")
    return {
        "video_id": clip, "video_height": hw[0], "video_width": hw[1], "video_frame_count": len(frames),
        "masklet_id": ids, "masklet_class": [classes[i] for i in ids], "masklet_num": len(ids),
        "masklet": [[frame.get(i, empty) for i in ids] for frame in frames],
    }  # fmt: skip
