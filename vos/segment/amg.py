"""Geometry of the everything mode: point grids, crop boxes, boxes of masks, stability scores, box NMS and RLE.

Shapes: N masks of (H, W); boxes (N, 4) x0, y0, x1, y1 (XYXY, pixels); points (P, 2) x, y. Behaviour as Meta's
`sam2.utils.amg` (SAM 2's automatic mask generator), written with torch and numpy only (no torchvision).
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import torch

from vos.boxes import nms as greedy_nms


def point_grid(n_per_side: int) -> np.ndarray:
    """(n*n, 2) points in [0, 1]^2 at the centres of an n x n grid of cells, rows of x first."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, scale_per_layer: int) -> list[np.ndarray]:
    """One grid per crop layer (layer 0: the whole image), each `scale_per_layer` times sparser per side."""
    return [point_grid(int(n_per_side / (scale_per_layer**i))) for i in range(n_layers + 1)]


def crop_boxes(image_hw: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """The whole image, then (2^(i+1))^2 overlapping crops on layer i+1 -> (XYXY boxes, their layers)."""
    h, w = image_hw
    boxes, layers = [[0, 0, w, h]], [0]

    def crop_len(length: int, n: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n - 1) + length) / n))

    for layer in range(n_layers):
        n = 2 ** (layer + 1)
        overlap = int(overlap_ratio * min(h, w) * (2 / n))
        crop_w, crop_h = crop_len(w, n, overlap), crop_len(h, n, overlap)
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
            layers.append(layer + 1)
    return boxes, layers


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """(N, H, W) logits -> (N,) IoU of the masks thresholded at threshold + offset and threshold - offset. Pixels
    counted by NumPy (2.5x torch's sum of a bool tensor here; the same integers)."""
    flat = logits.detach().flatten(-2).cpu()
    inner = np.count_nonzero((flat > threshold + offset).numpy(), axis=1)
    outer = np.count_nonzero((flat > threshold - offset).numpy(), axis=1)
    return torch.from_numpy(inner) / torch.from_numpy(outer)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(N, H, W) bool -> (N, 4) XYXY boxes of the set pixels (inclusive ends); [0, 0, 0, 0] for an empty mask."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.long, device=masks.device)
    rows, cols = masks.any(-1), masks.any(-2)
    empty = ~rows.any(-1)
    ys, xs = torch.arange(h, device=masks.device), torch.arange(w, device=masks.device)
    top = torch.where(rows, ys, h).amin(-1)
    bottom = torch.where(rows, ys, -1).amax(-1)
    left = torch.where(cols, xs, w).amin(-1)
    right = torch.where(cols, xs, -1).amax(-1)
    boxes = torch.stack([left, top, right, bottom], -1)
    return boxes.masked_fill(empty[:, None], 0)


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (`vos.boxes.nms`, IoU in float32): indices of the boxes kept, highest score
    first (ties: lower index first). A box is dropped when its IoU with a kept box exceeds `iou_threshold`."""
    kept = greedy_nms(boxes.float().numpy(), scores.float().numpy(), iou_threshold)
    return torch.from_numpy(kept)


def near_crop_edge(boxes: torch.Tensor, crop: list[int], image_box: list[int], atol: float = 20.0) -> torch.Tensor:
    """(N,) True for boxes (in crop coordinates) that touch the crop's edge where it is not the image's edge: such
    masks are likely cut by the crop."""
    crop_t = torch.as_tensor(crop, dtype=torch.float)
    image_t = torch.as_tensor(image_box, dtype=torch.float)
    boxes = (boxes + torch.tensor([crop[0], crop[1], crop[0], crop[1]])).float()
    at_crop = torch.isclose(boxes, crop_t[None], atol=atol, rtol=0)
    at_image = torch.isclose(boxes, image_t[None], atol=atol, rtol=0)
    return (at_crop & ~at_image).any(1)


def uncrop_masks(masks: torch.Tensor, crop: list[int], image_hw: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) masks of a crop -> (N, H, W) masks of the image, zero outside the crop."""
    x0, y0, x1, y1 = crop
    h, w = image_hw
    if (x0, y0, x1, y1) == (0, 0, w, h):
        return masks
    return torch.nn.functional.pad(masks, (x0, w - x1, y0, h - y1), value=0)


def mask_to_rle(masks: torch.Tensor) -> list[dict]:
    """(N, H, W) bool -> uncompressed RLEs {"size": [H, W], "counts": [...]}, column-major, starting with a run
    of zeros (pycocotools' layout)."""
    n, h, w = masks.shape
    flat = masks.permute(0, 2, 1).flatten(1)
    change = (flat[:, 1:] ^ flat[:, :-1]).nonzero()  # (mask, index) rows, in mask order
    per_mask = torch.bincount(change[:, 0], minlength=n).tolist()
    starts = flat[:, 0].tolist()
    out = []
    for i, cuts in enumerate(torch.split(change[:, 1] + 1, per_mask)):
        edges = torch.cat([torch.zeros(1, dtype=cuts.dtype), cuts, torch.tensor([h * w], dtype=cuts.dtype)])
        counts = [0] if starts[i] else []
        counts.extend((edges[1:] - edges[:-1]).tolist())
        out.append({"size": [h, w], "counts": counts})
    return out


def rle_to_mask(rle: dict) -> np.ndarray:
    """An uncompressed RLE -> (H, W) bool."""
    h, w = rle["size"]
    values = np.zeros(len(rle["counts"]), dtype=bool)
    values[1::2] = True
    return np.repeat(values, rle["counts"]).reshape(w, h).T


def rle_area(rle: dict) -> int:
    return int(sum(rle["counts"][1::2]))


def coco_rle(rle: dict) -> dict:
    """An uncompressed RLE -> COCO's compressed one, its counts a str (JSON-ready)."""
    from pycocotools import mask as mask_utils

    h, w = rle["size"]
    encoded = mask_utils.frPyObjects(rle, h, w)
    encoded["counts"] = encoded["counts"].decode("utf-8")
    return encoded


SMALL_REGION_LOGIT = 10.0  # how far past the threshold a flipped region's logits go, as Meta's image predictor


def clean_small_regions(logits: torch.Tensor, max_area: int, threshold: float = 0.0) -> torch.Tensor:
    """(..., H, W) logits -> the same with every 8-connected hole (at most the threshold) and island (above it) of
    at most `max_area` pixels flipped to threshold +- SMALL_REGION_LOGIT, as Meta's SAM2Transforms.postprocess_masks
    (which needs Meta's CUDA extension). `max_area` 0 returns the logits unchanged."""
    if max_area <= 0:
        return logits
    from scipy import ndimage

    flat = logits.reshape(-1, *logits.shape[-2:])
    out = flat.clone()
    eight = np.ones((3, 3), dtype=bool)
    for i in range(flat.shape[0]):
        for region, value in ((flat[i] <= threshold, threshold + SMALL_REGION_LOGIT),
                              (flat[i] > threshold, threshold - SMALL_REGION_LOGIT)):  # fmt: skip
            labels, count = ndimage.label(region.cpu().numpy(), structure=eight)
            if count:
                small = np.bincount(labels.ravel(), minlength=count + 1) <= max_area
                small[0] = False
                out[i][torch.from_numpy(small[labels]).to(out.device)] = value
    return out.reshape(logits.shape)


def xyxy_to_xywh(box: list[float]) -> list[float]:
    x0, y0, x1, y1 = box
    return [x0, y0, x1 - x0, y1 - y0]
