"""The everything mode: every object of an image as a mask, from a grid of single-click prompts.

One image-encoder pass per crop (the whole image, then the crops of `crop_n_layers`); the grid's clicks go
through the prompt encoder and mask decoder `points_per_batch` at a time; masks below the predicted-IoU and
stability thresholds are dropped, then duplicates by box NMS (within a crop, then across crops). Settings and
records as Meta's `SAM2AutomaticMaskGenerator` (sam2 1.1.0), which the tests compare it with.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from vos.image_predictor import ImagePredictor
from vos.modeling.sam2 import SAM2Model
from vos.segment.amg import (
    box_area,
    clean_small_regions,
    coco_rle,
    crop_boxes,
    layer_point_grids,
    mask_to_rle,
    masks_to_boxes,
    near_crop_edge,
    nms,
    rle_area,
    rle_to_mask,
    stability_score,
    uncrop_masks,
    xyxy_to_xywh,
)

OutputMode = Literal["binary_mask", "uncompressed_rle", "coco_rle"]


class MaskGeneratorSettings(BaseModel):
    """How the everything mode prompts and filters (Meta's names and defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    points_per_side: int = Field(32, ge=1, le=256, description="clicks per side of the grid on the whole image")
    points_per_batch: int = Field(64, ge=1, le=4096, description="clicks through the decoder at once (memory)")
    pred_iou_thresh: float = Field(0.8, ge=0, le=1, description="drop masks whose predicted IoU is not above this")
    stability_score_thresh: float = Field(0.95, ge=0, le=1, description="drop masks less stable than this")
    stability_score_offset: float = Field(1.0, ge=0, description="logit offset of the stability score's two masks")
    mask_threshold: float = Field(0.0, description="logit threshold of a mask")
    box_nms_thresh: float = Field(0.7, gt=0, le=1, description="box IoU above which a crop's duplicates are dropped")
    crop_n_layers: int = Field(0, ge=0, le=4, description="layers of crops: layer i has (2^i)^2 crops")
    crop_nms_thresh: float = Field(0.7, gt=0, le=1, description="box IoU above which duplicates across crops go")
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1, description="overlap of neighbouring crops")
    crop_n_points_downscale_factor: int = Field(1, ge=1, description="grid per side divided by this per layer")
    min_mask_region_area: int = Field(
        0, ge=0, description="holes and islands of at most this many pixels are flipped in the logits (0: off)"
    )
    output_mode: OutputMode = Field("binary_mask", description="segmentation as a mask, an RLE or a COCO RLE")
    use_m2m: bool = Field(False, description="refine each mask once more, given itself as the mask prompt")
    multimask_output: bool = Field(True, description="three masks per click (SAM's ambiguity-aware output)")

    @model_validator(mode="after")
    def _grid_not_empty(self) -> MaskGeneratorSettings:
        last = int(self.points_per_side / self.crop_n_points_downscale_factor**self.crop_n_layers)
        if last < 1:
            raise ValueError(f"the grid of crop layer {self.crop_n_layers} would have no point: "
                             "lower crop_n_points_downscale_factor or crop_n_layers")  # fmt: skip
        return self


class MaskGenerator:
    """Masks of everything in an image:

        generator = MaskGenerator(vos.load_model("sam2.1_hiera_t"), points_per_side=16)
        records = generator.generate(image)      # (H, W, 3) uint8 RGB -> a list of dicts, as Meta's

    Each record: segmentation ((H, W) bool, or an RLE per `output_mode`), area, bbox (XYWH), predicted_iou,
    point_coords ([[x, y]]), stability_score, crop_box (XYWH). `point_grids` replaces the grids of
    `points_per_side` (one (P, 2) array of points in [0, 1]^2 per crop layer).
    """

    def __init__(
        self,
        model: SAM2Model,
        point_grids: list[np.ndarray] | None = None,
        settings: MaskGeneratorSettings | None = None,
        **fields: object,
    ) -> None:
        base = settings.model_dump() if settings is not None else {}
        self.settings = s = MaskGeneratorSettings(**{**base, **fields})
        if point_grids is not None and len(point_grids) != s.crop_n_layers + 1:
            layers = s.crop_n_layers + 1
            raise ValueError(f"point_grids needs {layers} grids (one per crop layer), got {len(point_grids)}")
        self.point_grids = point_grids or layer_point_grids(
            s.points_per_side, s.crop_n_layers, s.crop_n_points_downscale_factor
        )
        self.predictor = ImagePredictor(model, mask_threshold=s.mask_threshold)

    @torch.inference_mode()
    def generate(self, image: np.ndarray) -> list[dict]:
        """(H, W, 3) uint8 RGB -> one record per mask, ordered as Meta's generator orders them."""
        data = self._generate(image)
        records = []
        for i, rle in enumerate(data["rles"]):
            records.append({
                "segmentation": self._segmentation(rle),
                "area": rle_area(rle),
                "bbox": xyxy_to_xywh(data["boxes"][i].float().tolist()),
                "predicted_iou": float(data["iou_preds"][i]),
                "point_coords": [data["points"][i].float().tolist()],
                "stability_score": float(data["stability_score"][i]),
                "crop_box": xyxy_to_xywh(data["crop_boxes"][i].float().tolist()),
            })  # fmt: skip
        return records

    def _segmentation(self, rle: dict):
        mode = self.settings.output_mode
        return rle_to_mask(rle) if mode == "binary_mask" else coco_rle(rle) if mode == "coco_rle" else rle

    def _generate(self, image: np.ndarray) -> dict:
        hw = (image.shape[0], image.shape[1])
        crops, layers = crop_boxes(hw, self.settings.crop_n_layers, self.settings.crop_overlap_ratio)
        data = _concat([self._crop(image, crop, layer, hw) for crop, layer in zip(crops, layers)])
        if len(crops) > 1 and len(data["rles"]):
            keep = nms(data["boxes"], 1 / box_area(data["crop_boxes"]).float(), self.settings.crop_nms_thresh)
            data = _take(data, keep)
        return data

    def _crop(self, image: np.ndarray, crop: list[int], layer: int, image_hw: tuple[int, int]) -> dict:
        """Masks of one crop: its grid through the decoder, thresholds, NMS; boxes and points in image pixels."""
        x0, y0, x1, y1 = crop
        cropped = np.ascontiguousarray(image[y0:y1, x0:x1])
        self.predictor.set_image(cropped)
        points = self.point_grids[layer] * np.array(cropped.shape[1::-1])[None]
        step = self.settings.points_per_batch
        data = _concat([self._batch(points[i : i + step], crop, image_hw) for i in range(0, len(points), step)])
        self.predictor.reset_predictor()
        if len(data["rles"]):
            data = _take(data, nms(data["boxes"], data["iou_preds"], self.settings.box_nms_thresh))
        offset = torch.tensor([x0, y0])
        data["boxes"] = data["boxes"] + offset.repeat(2)
        data["points"] = data["points"] + offset
        data["crop_boxes"] = torch.tensor([crop] * len(data["rles"]), dtype=torch.long).reshape(-1, 4)
        return data

    def _batch(self, points: np.ndarray, crop: list[int], image_hw: tuple[int, int]) -> dict:
        """(P, 2) clicks in crop pixels -> the masks that pass the filters (RLEs in image coordinates)."""
        s = self.settings
        coords = torch.as_tensor(points, dtype=torch.float32)
        labels = torch.ones(len(points), 1, dtype=torch.int)
        masks, ious, low_res = self._decode(coords[:, None], labels, None, s.multimask_output)
        k = masks.shape[1]
        masks, ious, low_res = masks.flatten(0, 1), ious.flatten(0, 1), low_res.flatten(0, 1)
        coords = coords.repeat_interleave(k, dim=0)
        if s.use_m2m:
            masks, ious = self._refine(coords, low_res)
        keep = ious > s.pred_iou_thresh if s.pred_iou_thresh > 0 else torch.ones_like(ious, dtype=torch.bool)
        masks, ious, coords = masks[keep], ious[keep], coords[keep]
        stability = stability_score(masks, s.mask_threshold, s.stability_score_offset)
        if s.stability_score_thresh > 0:
            keep = stability >= s.stability_score_thresh
            masks, ious, coords, stability = masks[keep], ious[keep], coords[keep], stability[keep]
        binary = masks > s.mask_threshold
        boxes = masks_to_boxes(binary)
        keep = ~near_crop_edge(boxes, crop, [0, 0, image_hw[1], image_hw[0]])
        binary, boxes = binary[keep], boxes[keep]
        return {
            "rles": mask_to_rle(uncrop_masks(binary, crop, image_hw)), "boxes": boxes, "iou_preds": ious[keep],
            "points": coords[keep], "stability_score": stability[keep],
        }  # fmt: skip

    def _decode(self, coords, labels, mask_input, multimask: bool):
        """Clicks (B, 1, 2) in crop pixels -> logits (B, K, h, w) at the crop's size (small regions cleaned), IoUs
        (B, K), low-res logits (B, K, 4E, 4E)."""
        masks, ious, low_res = self.predictor.predict_clicks(coords, labels, mask_input, multimask)
        s = self.settings
        return clean_small_regions(masks, s.min_mask_region_area, s.mask_threshold), ious, low_res

    def _refine(self, coords: torch.Tensor, low_res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each mask decoded again from its click and its own low-res logits as the mask prompt (one mask each)."""
        step = self.settings.points_per_batch
        masks, ious = [], []
        labels = torch.ones(len(coords), 1, dtype=torch.int)
        for i in range(0, len(coords), step):
            batch = slice(i, i + step)
            m, iou, _ = self._decode(coords[batch, None], labels[batch], low_res[batch, None], False)
            masks.append(m[:, 0])
            ious.append(iou[:, 0])
        return torch.cat(masks), torch.cat(ious)


_FIELDS = ("rles", "boxes", "iou_preds", "points", "stability_score", "crop_boxes")


def _concat(parts: list[dict]) -> dict:
    out: dict = {"rles": [r for p in parts for r in p["rles"]]}
    for key in _FIELDS[1:]:
        tensors = [p[key] for p in parts if key in p]
        if tensors:
            out[key] = torch.cat(tensors)
    return out


def _take(data: dict, keep: torch.Tensor) -> dict:
    out = {k: v[keep] for k, v in data.items() if k != "rles"}
    out["rles"] = [data["rles"][i] for i in keep.tolist()]
    return out
