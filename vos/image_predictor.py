"""Single-image segmentation with prompts, with the interface of Meta's SAM2ImagePredictor.

A model loaded with its exported graphs (`backend="onnxruntime"`, `"openvino"` or `"auto"`) runs its image encoder
and its prompted decoder there, as the tracker does; a mask prompt alone runs on its PyTorch modules."""

from __future__ import annotations

import numpy as np
import torch

from vos.modeling.prompt_encoder import prepend_box
from vos.modeling.sam2 import SAM2Model
from vos.tracking.segmenter import model_stages
from vos.tracking.transforms import check_rgb_image, preprocess_image, to_input_frame, upscale_logits

MASK_THRESHOLD = 0.0
LOW_RES_LOGIT_CLAMP = 32.0
DECODE_CLICK_TOKENS = 16384
"""`decode_clicks` sends clicks through the decoder in groups of this many image tokens (clicks x E*E; 16 clicks at
512 px, 4 at 1024), at least one click: the per-call work is shared by several clicks while a group's image-sized
tensors stay small. EdgeTAM, 2-core Xeon, the upscaling click by click, ms per 64 clicks at 512 px for groups of 2,
4, 8, 16 and 32: fp32 507, 425, 388, 392, 443; bf16 543, 390, 298, 265, 285; at 1024 px (32 clicks) fp32 720, 756,
763, 750, 878; bf16 607, 492, 536, 583, 660."""


class ImagePredictor:
    """Embed an image once with `set_image`, then `predict` masks for any number of prompts.

    Feature sizes follow the model's `image_size` (1024 or 512).
    """

    def __init__(self, model: SAM2Model, mask_threshold: float = MASK_THRESHOLD) -> None:
        self.model = model
        self.mask_threshold = mask_threshold
        self.reset_predictor()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def _graphs(self) -> bool:
        """Whether prompts are decoded by the model's graphs (which add the no-memory embedding themselves)."""
        return self.model.onnx_graphs is not None

    def reset_predictor(self) -> None:
        self._features: dict[str, torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]] | None = None
        self._orig_hw: tuple[int, int] | None = None

    @torch.inference_mode()
    def set_image(self, image: np.ndarray) -> None:
        """Compute the embeddings of an HxWx3 uint8 RGB image (a rejected image keeps the previous one)."""
        check_rgb_image(image)
        self.reset_predictor()
        x = preprocess_image(image, self.model.image_size, self.device)
        with self.model.autocast():
            feats, _ = model_stages(self.model).encode_images(x)
        self._features = {"image_embed": feats[-1], "high_res_feats": feats[:-1]}
        if self.model.cfg.tracking.directly_add_no_mem_embed and not self._graphs:
            self._features["image_embed"] = self.model.add_no_mem_embed(feats[-1])
        self._orig_hw = (image.shape[0], image.shape[1])

    def _token_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's `token_rows` of this image, made on its first decode (the everything mode decodes one
        image in tens of groups)."""
        if "token_rows" not in self._features:
            self._features["token_rows"] = self.model.sam_mask_decoder.token_rows(self._features["high_res_feats"])
        return self._features["token_rows"]

    def _require_image(self) -> None:
        if self._features is None:
            raise RuntimeError("call set_image(...) before predict(...)")

    def _to_input_frame(self, coords: np.ndarray) -> torch.Tensor:
        return to_input_frame(
            torch.as_tensor(coords, dtype=torch.float, device=self.device), self._orig_hw, self.model.image_size
        )

    @torch.inference_mode()
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for prompts on the current image.

        point_coords (P, 2) pixel (x, y) with point_labels (P,) (1 foreground, 0 background),
        or (B, P, 2) / (B, P) for B objects at once; box (4,) or (B, 4) as x0, y0, x1, y1;
        mask_input (1, 4E, 4E) low-res logits from a previous call.
        Returns masks (K, H, W) (bool, or float logits with return_logits), IoU predictions (K,)
        and low-res logits (K, 4E, 4E); with B objects each gets a leading B axis.
        """
        self._require_image()
        coords = labels = boxes = masks_in = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords")
            coords = self._to_input_frame(np.asarray(point_coords))
            labels = torch.as_tensor(np.asarray(point_labels), dtype=torch.int, device=self.device)
            if coords.shape[:-1] != labels.shape or coords.shape[-1] != 2:
                raise ValueError(f"point_coords {tuple(coords.shape)} and point_labels {tuple(labels.shape)} disagree")
            if coords.ndim == 2:
                coords, labels = coords[None], labels[None]
        if box is not None:
            boxes = self._to_input_frame(np.asarray(box, dtype=np.float32).reshape(-1, 2, 2))
        if mask_input is not None:
            masks_in = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)
            if masks_in.ndim == 3:
                masks_in = masks_in[None]
            expected = self.model.sam_prompt_encoder.mask_input_size
            if tuple(masks_in.shape[-2:]) != expected:
                raise ValueError(
                    f"mask_input must be {expected[0]}x{expected[1]} low-res logits, got {tuple(masks_in.shape)}"
                )

        with self.model.autocast():
            masks, ious, low_res = self._predict(coords, labels, boxes, masks_in, multimask_output, return_logits)
        if masks.shape[0] == 1:
            masks, ious, low_res = masks[0], ious[0], low_res[0]
        return (
            masks.float().cpu().numpy() if return_logits else masks.cpu().numpy(),
            ious.float().cpu().numpy(),
            low_res.float().cpu().numpy(),
        )

    def decode_clicks(
        self, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched tensors in, tensors out (the everything mode's path): clicks (B, P, 2) in image pixels with
        labels (B, P), optional low-res logits (B, 1, 4E, 4E) -> float32 low-res logits (B, K, 4E, 4E), not yet
        clamped (`upscale_logits(low_res, orig_hw)` gives `predict`'s logits; clamped, its low-res output) and
        IoUs (B, K). The caller upscales only the masks it keeps. Each click's outputs are its own, however grouped."""
        self._require_image()
        if not len(coords):
            raise ValueError("decode_clicks needs at least one click")
        step = max(1, DECODE_CLICK_TOKENS // self._features["image_embed"][0, 0].numel())
        coords = self._to_input_frame(coords)
        low_res = ious = None
        with self.model.autocast():
            for i in range(0, len(coords), step):
                masks_in = None if mask_input is None else mask_input[i : i + step]
                masks, iou = self._decode(coords[i : i + step], labels[i : i + step], None, masks_in, multimask_output)
                if low_res is None:  # filled group by group: no second (B, K, 4E, 4E) pass to join and cast them
                    low_res = masks.new_empty(len(coords), *masks.shape[1:], dtype=torch.float32)
                    ious = iou.new_empty(len(coords), *iou.shape[1:], dtype=torch.float32)
                low_res[i : i + step], ious[i : i + step] = masks, iou
        return low_res, ious

    def upscale(self, low_res: torch.Tensor) -> torch.Tensor:
        """(B, K, 4E, 4E) low-res logits (`decode_clicks`) -> float32 (B, K, H, W) at the image's size."""
        self._require_image()
        return upscale_logits(low_res, self._orig_hw)

    def _predict(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks_in: torch.Tensor | None,
        multimask_output: bool,
        return_logits: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        low_res, ious = self._decode(coords, labels, boxes, masks_in, multimask_output)
        masks = upscale_logits(low_res, self._orig_hw)
        low_res = torch.clamp(low_res, -LOW_RES_LOGIT_CLAMP, LOW_RES_LOGIT_CLAMP)
        return (masks if return_logits else masks > self.mask_threshold), ious, low_res

    def _decode(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None,
        masks_in: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts in the model's input frame -> low-res logits (B, K, 4E, 4E) and IoUs (B, K)."""
        points = (coords, labels) if coords is not None else None
        if boxes is not None:
            points = prepend_box(boxes, points)
        embed = self._features["image_embed"]
        if self._graphs and points is not None:
            b = points[0].shape[0]
            raw = model_stages(self.model).decode(
                embed.expand(b, -1, -1, -1), *points, masks_in, self._features["high_res_feats"],
                no_memory=self.model.cfg.tracking.directly_add_no_mem_embed,
            )  # fmt: skip
            low_res, ious, _ = self.model.sam_mask_decoder.select_outputs(
                raw.masks, raw.ious, raw.obj_ptrs, multimask_output
            )
            return low_res, ious
        if self._graphs and self.model.cfg.tracking.directly_add_no_mem_embed:
            embed = self.model.add_no_mem_embed(embed)
        sparse, dense = self.model.sam_prompt_encoder(points=points, boxes=None, masks=masks_in)
        low_res, ious, _, _ = self.model.sam_mask_decoder(
            image_embeddings=embed,
            image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=points is not None and points[0].shape[0] > 1,
            high_res_features=self._features["high_res_feats"],
            token_rows=self._token_rows(),
        )
        return low_res, ious
