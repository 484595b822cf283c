"""The everything mode: every object of an image as a mask, from a grid of single-click prompts.

One image-encoder pass per crop (the whole image, then the crops of `crop_n_layers`); the grid's clicks go
through the prompt encoder and mask decoder `points_per_batch` at a time; masks below the predicted-IoU and
stability thresholds are dropped, then duplicates by box NMS (within a crop, then across crops). Settings and
records as Meta's `SAM2AutomaticMaskGenerator` (sam2 1.1.0), which the tests compare it with.

`hierarchical=True` is TinySAM's strategy: a grid 4x sparser per side first; the pixels where its kept masks are
confident (logit above `hierarchical_logit_thresh`) get no click of the full grid, which then runs on the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from vos.config import MaskGeneratorSettings, checked
from vos.image_predictor import LOW_RES_LOGIT_CLAMP, ImagePredictor
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
    point_grid,
    rle_area,
    rle_to_mask,
    stability_score,
    uncrop_masks,
    xyxy_to_xywh,
)
from vos.segment.upscaled import mask_stats, upscaled_stats

MASK_BATCH_BYTES = 512 << 20
"""The most the logits of one batch of clicks may take at the crop's size: `points_per_batch` 4096 of three masks
at 854x480 would need 20 GB."""


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
        self.settings = s = checked(MaskGeneratorSettings, "mask generator settings", **{**base, **fields})
        if point_grids is not None and s.hierarchical:
            raise ValueError("hierarchical mode builds its two grids from points_per_side: give no point_grids")
        if point_grids is not None and len(point_grids) != s.crop_n_layers + 1:
            layers = s.crop_n_layers + 1
            raise ValueError(f"point_grids needs {layers} grids (one per crop layer), got {len(point_grids)}")
        self.point_grids = point_grids or layer_point_grids(
            s.points_per_side, s.crop_n_layers, s.crop_n_points_downscale_factor
        )
        sides = [int(s.points_per_side / s.crop_n_points_downscale_factor**i) for i in range(s.crop_n_layers + 1)]
        self.sparse_grids = [point_grid(max(1, n // 4)) for n in sides]  # the hierarchical mode's first pass
        self.predictor = ImagePredictor(model, mask_threshold=s.mask_threshold)
        self.points_decoded = 0  # clicks the last `generate` sent through the decoder (m2m refinements not counted)

    @torch.inference_mode()
    def generate(self, image: np.ndarray) -> list[dict]:
        """(H, W, 3) uint8 RGB -> one record per mask, ordered as Meta's generator orders them."""
        data = self._generate(image)
        return [
            self._record(rle, data["boxes"][i], data["iou_preds"][i], [data["points"][i].float().tolist()],
                         data["stability_score"][i], data["crop_boxes"][i].tolist())
            for i, rle in enumerate(data["rles"])
        ]  # fmt: skip

    @torch.inference_mode()
    def prompted(self, image: np.ndarray, points: Sequence = (), boxes: Sequence = ()) -> list[dict]:
        """Masks of given prompts instead of the grid, as Ultralytics' `SAM(...)(image, points=..., bboxes=...)`: one
        per click (x, y) in pixels (the best of SAM's three by predicted IoU) and one per box (x0, y0, x1, y1), in
        `generate`'s records (a box's record has "box" and no point_coords)."""
        h, w = image.shape[:2]
        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        if not (np.all((points >= 0) & (points <= [w, h])) and np.all((boxes >= 0) & (boxes <= [w, h, w, h]))):
            raise ValueError(f"prompts must lie inside the {w}x{h} image")
        if np.any(boxes[:, 2:] <= boxes[:, :2]):
            raise ValueError("a box is x0,y0,x1,y1 with x1 > x0 and y1 > y0")
        self.predictor.set_image(image)
        try:
            outputs = [self._prompt(point=p) for p in points] + [self._prompt(box=b) for b in boxes]
        finally:
            self.predictor.reset_predictor()
        records = []
        for (logits, iou), prompt in zip(outputs, [*points.tolist(), *boxes.tolist()]):
            s = self.settings
            binary = logits > s.mask_threshold
            stability = stability_score(logits[None], s.mask_threshold, s.stability_score_offset)[0]
            clicks = [prompt] if len(prompt) == 2 else []
            record = self._record(mask_to_rle(binary[None])[0], masks_to_boxes(binary[None])[0], iou, clicks,
                                  stability, [0, 0, w, h])  # fmt: skip
            records.append(record if clicks else {**record, "box": prompt})
        return records

    def _prompt(self, point: np.ndarray | None = None, box: np.ndarray | None = None) -> tuple[torch.Tensor, float]:
        """One prompt -> its (H, W) logits and predicted IoU."""
        clicks = None if point is None else point[None]
        labels = None if point is None else np.ones(1, np.int32)
        multimask = point is not None  # one click is ambiguous: the best of three
        logits, ious, _ = self.predictor.predict(clicks, labels, box, multimask_output=multimask, return_logits=True)
        k = int(ious.argmax())
        return torch.from_numpy(logits[k]), float(ious[k])

    def _record(self, rle: dict, box, iou, points: list, stability, crop_box: list) -> dict:
        return {
            "segmentation": self._segmentation(rle),
            "area": rle_area(rle),
            "bbox": xyxy_to_xywh([float(v) for v in box]),
            "predicted_iou": float(iou),
            "point_coords": points,
            "stability_score": float(stability),
            "crop_box": xyxy_to_xywh([float(v) for v in crop_box]),
        }

    def _segmentation(self, rle: dict):
        mode = self.settings.output_mode
        return rle_to_mask(rle) if mode == "binary_mask" else coco_rle(rle) if mode == "coco_rle" else rle

    def _generate(self, image: np.ndarray) -> dict:
        hw = (image.shape[0], image.shape[1])
        self.points_decoded = 0
        crops, layers = crop_boxes(hw, self.settings.crop_n_layers, self.settings.crop_overlap_ratio)
        data = _concat([self._crop(image, crop, layer, hw) for crop, layer in zip(crops, layers)])
        if len(crops) > 1 and len(data["boxes"]):
            keep = nms(data["boxes"], 1 / box_area(data["crop_boxes"]).float(), self.settings.crop_nms_thresh)
            data = _take(data, keep)
        return data

    def _crop(self, image: np.ndarray, crop: list[int], layer: int, image_hw: tuple[int, int]) -> dict:
        """Masks of one crop: its grid through the decoder, thresholds, NMS; boxes and points in image pixels. Only
        the masks NMS keeps are upscaled and run-length encoded."""
        x0, y0, x1, y1 = crop
        cropped = np.ascontiguousarray(image[y0:y1, x0:x1])
        self.predictor.set_image(cropped)
        size = np.array(cropped.shape[1::-1])[None]
        points = self.point_grids[layer] * size
        if self.settings.hierarchical:
            first = self._points(self.sparse_grids[layer] * size, crop, image_hw, cover=True)
            x, y = (np.minimum(points.astype(int), size - 1)).T
            data = _concat([first, self._points(points[~first.pop("covered")[y, x].numpy()], crop, image_hw)])
        else:
            data = self._points(points, crop, image_hw)
        if len(data["boxes"]):
            data = _take(data, nms(data["boxes"], data["iou_preds"], self.settings.box_nms_thresh))
        data["rles"] = self._rles(data.pop("low_res"), crop, image_hw)
        self.predictor.reset_predictor()
        offset = torch.tensor([x0, y0])
        data["boxes"] = data["boxes"] + offset.repeat(2)
        data["points"] = data["points"] + offset
        data["crop_boxes"] = torch.tensor([crop] * len(data["rles"]), dtype=torch.long).reshape(-1, 4)
        return data

    def _points(self, points: np.ndarray, crop: list[int], image_hw: tuple[int, int], cover: bool = False) -> dict:
        """(P, 2) clicks in crop pixels, `points_per_batch` at a time -> the masks that pass the filters, and with
        `cover` "covered": the (h, w) pixels where one of them is above `hierarchical_logit_thresh`. A batch's logits at the
        crop's size are kept under MASK_BATCH_BYTES (fewer clicks at once than `points_per_batch` if need be: the
        same masks, as each click's are its own)."""
        h, w = crop[3] - crop[1], crop[2] - crop[0]
        per_click = (3 if self.settings.multimask_output else 1) * h * w * 4
        step = max(1, min(self.settings.points_per_batch, MASK_BATCH_BYTES // per_click))
        self.points_decoded += len(points)
        parts = [self._batch(points[i : i + step], crop, image_hw, cover) for i in range(0, len(points), step)]
        if not parts:
            side = self.predictor.model.sam_prompt_encoder.mask_input_size
            parts = [{"low_res": torch.zeros(0, *side), "boxes": torch.zeros(0, 4, dtype=torch.long),
                      "iou_preds": torch.zeros(0), "points": torch.zeros(0, 2), "stability_score": torch.zeros(0),
                      "covered": torch.zeros(h, w, dtype=torch.bool)}]  # fmt: skip
        data = _concat(parts)
        if cover:
            data["covered"] = torch.stack([p["covered"] for p in parts]).any(0)
        return data

    def _batch(self, points: np.ndarray, crop: list[int], image_hw: tuple[int, int], cover: bool) -> dict:
        """(P, 2) clicks in crop pixels -> the masks that pass the filters, as low-res logits. The predicted-IoU
        filter comes before any upscaling (a mask's predicted IoU does not depend on it); stability scores and boxes
        are those of the masks upscaled to the crop's size, counted without upscaling them (`mask_stats`) unless
        small regions are to be cleaned first."""
        s = self.settings
        coords = torch.as_tensor(points, dtype=torch.float32)
        labels = torch.ones(len(points), 1, dtype=torch.int)
        low_res, ious = self.predictor.decode_clicks(coords[:, None], labels, None, s.multimask_output)
        k = low_res.shape[1]
        low_res, ious = low_res.flatten(0, 1), ious.flatten(0, 1)
        coords = coords.repeat_interleave(k, dim=0)
        if s.use_m2m:
            low_res, ious = self._refine(coords, low_res)
        if s.pred_iou_thresh > 0:
            low_res, ious, coords = _rows(ious > s.pred_iou_thresh, low_res, ious, coords)
        hw = (crop[3] - crop[1], crop[2] - crop[0])
        if s.min_mask_region_area > 0:  # small regions cleaned first: counted on the cleaned masks
            stability, boxes = upscaled_stats(self._upscale(low_res), s.mask_threshold, s.stability_score_offset)
        else:
            stability, boxes = mask_stats(low_res, hw, s.mask_threshold, s.stability_score_offset)
        keep = ~near_crop_edge(boxes, crop, [0, 0, image_hw[1], image_hw[0]])
        if s.stability_score_thresh > 0:
            keep &= stability >= s.stability_score_thresh
        low_res, boxes, ious, coords, stability = _rows(keep, low_res, boxes, ious, coords, stability)
        data = {"low_res": low_res, "boxes": boxes, "iou_preds": ious, "points": coords, "stability_score": stability}
        if cover:
            data["covered"] = (self._upscale(data["low_res"]) > s.hierarchical_logit_thresh).any(0)
        return data

    def _rles(self, low_res: torch.Tensor, crop: list[int], image_hw: tuple[int, int]) -> list[dict]:
        """(N, 4E, 4E) low-res logits of a crop's kept masks -> their RLEs in image coordinates, a batch of at most
        MASK_BATCH_BYTES of logits at a time."""
        h, w = crop[3] - crop[1], crop[2] - crop[0]
        step = max(1, MASK_BATCH_BYTES // (h * w * 4))
        rles = []
        for i in range(0, len(low_res), step):
            binary = self._upscale(low_res[i : i + step]) > self.settings.mask_threshold
            rles.extend(mask_to_rle(uncrop_masks(binary, crop, image_hw)))
        return rles

    def _upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """(N, 4E, 4E) low-res logits -> (N, h, w) logits at the crop's size, small regions cleaned."""
        masks = self.predictor.upscale(low_res[:, None])[:, 0]
        return clean_small_regions(masks, self.settings.min_mask_region_area, self.settings.mask_threshold)

    def _refine(self, coords: torch.Tensor, low_res: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each mask decoded again from its click and its own low-res logits (clamped, as the predictor gives
        them) as the mask prompt, one mask each -> the new low-res logits (N, 4E, 4E) and IoUs (N,)."""
        step = self.settings.points_per_batch
        refined, ious = [], []
        labels = torch.ones(len(coords), 1, dtype=torch.int)
        prompts = low_res.clamp(-LOW_RES_LOGIT_CLAMP, LOW_RES_LOGIT_CLAMP)
        for i in range(0, len(coords), step):
            batch = slice(i, i + step)
            r, iou = self.predictor.decode_clicks(coords[batch, None], labels[batch], prompts[batch, None], False)
            refined.append(r[:, 0])
            ious.append(iou[:, 0])
        return torch.cat(refined), torch.cat(ious)


_FIELDS = ("rles", "low_res", "boxes", "iou_preds", "points", "stability_score", "crop_boxes")


def _concat(parts: list[dict]) -> dict:
    out: dict = {"rles": [r for p in parts for r in p["rles"]]} if any("rles" in p for p in parts) else {}
    for key in _FIELDS[1:]:
        tensors = [p[key] for p in parts if key in p]
        if tensors:
            out[key] = torch.cat(tensors)
    return out


def _rows(keep: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rows of each tensor where `keep` (N,) is True (or at the indices `keep` lists), by `index_select`: a
    boolean index of a batch's (N, 4E, 4E) logits takes several times as long."""
    index = keep.nonzero()[:, 0] if keep.dtype == torch.bool else keep
    return tuple(t.index_select(0, index) for t in tensors)


def _take(data: dict, keep: torch.Tensor) -> dict:
    names = [k for k in data if k != "rles"]
    out = dict(zip(names, _rows(keep, *(data[k] for k in names))))
    if "rles" in data:
        out["rles"] = [data["rles"][i] for i in keep.tolist()]
    return out
