"""SAM 2 mask decoder.

Output tokens (object-score, IoU, 4 mask tokens) and prompt tokens run through the
two-way transformer with the image embedding; the image tokens are upscaled 4x with
the stride-8 and stride-4 features added in, and each mask token's hypernetwork MLP
turns them into mask logits at stride 4.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from vos.config import MaskDecoderConfig
from vos.modeling.common import MLP, LayerNorm2d, exporting
from vos.modeling.two_way_transformer import TwoWayTransformer


def _subpixel_matrix(deconv: nn.ConvTranspose2d) -> torch.Tensor:
    """A 2x2 stride-2 transposed convolution's weight (C_in, C_out, 2, 2) as (C_in, 4 C_out), columns in
    (sub-row, sub-column, channel) order."""
    w = deconv.weight
    return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)


def _gelu_(act: nn.GELU, x: torch.Tensor) -> torch.Tensor:
    """`act(x)` in place: a fresh tensor of this size costs its page faults again on every call."""
    return torch.ops.aten.gelu_(x, approximate=act.approximate)


def _subpixel_rows(feat: torch.Tensor | None, bias: torch.Tensor, levels: int) -> torch.Tensor:
    """A feature map (B or 1, C, E * 2^levels, same) plus a per-channel bias, as rows (B or 1, E*E * 4^levels, C) in
    the order `masks_from_tokens` makes them: (i, j, then each level's sub-row and sub-column); the bias alone as
    (1, 1, C) without features."""
    if feat is None:
        return bias.view(1, 1, -1)
    bf, c, hh, ww = feat.shape
    h, w = hh >> levels, ww >> levels
    x = feat.view(bf, c, h, *([2] * levels), w, *([2] * levels))
    rows = [3 + i for i in range(levels)]
    cols = [4 + levels + i for i in range(levels)]
    order = [0, 2, 3 + levels] + [d for pair in zip(rows, cols) for d in pair] + [1]
    return (x.permute(order) + bias).reshape(bf, -1, c)


def _image_order(masks: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Masks (B, K, E*E*16) in `masks_from_tokens`' pixel order (i, j, di, dj, ei, ej) -> (B, K, 4E, 4E), rows
    4i + 2di + ei and columns 4j + 2dj + ej. Each (ej = 0, 1) pair moves as one element of twice the width: the
    permuting copy, two elements at a time otherwise, takes a tenth as long."""
    b, k, _ = masks.shape
    wide = {2: torch.int32, 4: torch.int64}.get(masks.element_size())
    if wide is None:
        x = masks.view(b, k, h, w, 2, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5, 7)
        return x.reshape(b, k, 4 * h, 4 * w)
    pairs = masks.view(wide).view(b, k, h, w, 2, 2, 2).permute(0, 1, 2, 4, 6, 3, 5)
    return pairs.reshape(b, k, 4 * h, 2 * w).view(masks.dtype)


# Logit of an object score when the decoder has no object-score head: sigmoid(10) ~ 1.
DEFAULT_OBJECT_SCORE_LOGIT = 10.0


class DecoderOutput(NamedTuple):
    masks: torch.Tensor  # (B, K, 4E, 4E) mask logits
    iou_pred: torch.Tensor  # (B, K)
    sam_tokens: torch.Tensor  # (B, K or 1, C) output tokens used for object pointers
    object_score_logits: torch.Tensor  # (B, 1)


class MaskDecoder(nn.Module):
    def __init__(self, dim: int, cfg: MaskDecoderConfig, use_high_res_features: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = TwoWayTransformer(
            cfg.transformer_depth, dim, cfg.transformer_num_heads, cfg.transformer_mlp_dim, cfg.attention_downsample_rate
        )
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        if cfg.pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
            self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            dim, cfg.iou_head_hidden_dim, self.num_mask_tokens, cfg.iou_head_depth,
            sigmoid_output=cfg.iou_prediction_use_sigmoid,
        )
        if cfg.pred_obj_scores:
            self.pred_obj_score_head = MLP(dim, dim, 1, 3) if cfg.pred_obj_scores_mlp else nn.Linear(dim, 1)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None = None,
        token_rows: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> DecoderOutput:
        """image_embeddings (B or 1, C, E, E), image_pe (1, C, E, E), sparse (B, N, C), dense (B, C, E, E).

        high_res_features: [(B, C/8, 4E, 4E), (B, C/4, 2E, 2E)] already projected by conv_s0/conv_s1.
        token_rows: `self.token_rows(high_res_features)`, made once by a caller that decodes one image many times.
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
            repeat_image, high_res_features, token_rows,
        )
        return DecoderOutput(*self.select_outputs(masks, iou_pred, mask_tokens_out, multimask_output), object_score_logits)

    def select_outputs(
        self, masks: torch.Tensor, iou_pred: torch.Tensor, tokens: torch.Tensor, multimask_output: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All 4 masks (B, 4, 4E, 4E), IoUs (B, 4) and per-token rows (B, 4, ...) -> what `forward` returns: the 3
        multimask candidates, or the single mask (the best candidate instead when it is unstable, SAM 2.1), with the
        rows object pointers come from (those of the candidates when asked for, else the single-mask token's)."""
        if multimask_output:
            out_masks, out_ious = masks[:, 1:], iou_pred[:, 1:]
        elif self.cfg.dynamic_multimask_via_stability and not self.training:
            out_masks, out_ious = self._dynamic_multimask_via_stability(masks, iou_pred)
        else:
            out_masks, out_ious = masks[:, 0:1], iou_pred[:, 0:1]
        if multimask_output and self.cfg.use_multimask_token_for_obj_ptr:
            return out_masks, out_ious, tokens[:, 1:]
        return out_masks, out_ious, tokens[:, 0:1]

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        repeat_image: bool,
        high_res_features: list[torch.Tensor] | None,
        token_rows: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """All 4 masks (B, 4, 4E, 4E), IoUs (B, 4), mask tokens (B, 4, C), object score logits (B, 1)."""
        token_weights = [self.iou_token.weight, self.mask_tokens.weight]
        if self.cfg.pred_obj_scores:
            token_weights.insert(0, self.obj_score_token.weight)
        first = len(token_weights) - 2  # index of the IoU token
        output_tokens = torch.cat(token_weights, dim=0)
        b = sparse_prompt_embeddings.shape[0]
        tokens = torch.cat((output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings), dim=1)

        shared = repeat_image and image_embeddings.shape[0] == 1 and dense_prompt_embeddings.stride(0) == 0
        if shared:  # one image, no mask prompts (the dense embedding is one row, expanded): the image side once
            src, pos_src = image_embeddings + dense_prompt_embeddings[:1], image_pe
        else:
            src = torch.repeat_interleave(image_embeddings, b, dim=0) if repeat_image else image_embeddings
            if src.shape[0] != b:
                raise ValueError(f"image batch {src.shape[0]} does not match prompt batch {b}")
            src = src + dense_prompt_embeddings
            pos_src = torch.repeat_interleave(image_pe, b, dim=0)
        _, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, first, :]
        mask_tokens_out = hs[:, first + 1 : first + 1 + self.num_mask_tokens, :]

        if self.use_high_res_features and high_res_features is None:
            raise ValueError("this decoder needs the stride-4 and stride-8 features")
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        on_tokens = not exporting() and not torch.is_grad_enabled() and src.device.type == "cpu"
        if not (on_tokens and self._upscales_by_tokens):
            upscaled = self.upscale(src.transpose(1, 2).reshape(b, c, h, w), high_res_features)
            b, c, h, w = upscaled.shape
            masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        else:
            masks = self.masks_from_tokens(src, hyper_in, (h, w), high_res_features, token_rows)
        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.cfg.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0, :])
        else:
            object_score_logits = DEFAULT_OBJECT_SCORE_LOGIT * iou_pred.new_ones(iou_pred.shape[0], 1)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def upscale(self, src: torch.Tensor, high_res_features: list[torch.Tensor] | None) -> torch.Tensor:
        """Image tokens (B, C, E, E) -> upscaled features (B, C/8, 4E, 4E), the high-res features added in."""
        if not self.use_high_res_features:
            return self.output_upscaling(src)
        deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res_features
        upscaled = act1(norm1(deconv1(src) + feat_s1))
        return act2(deconv2(upscaled) + feat_s0)

    @property
    def _upscales_by_tokens(self) -> bool:
        """Whether both upscaling convolutions are plain 2x2 stride-2 transposed convolutions (one output pixel from
        one input pixel each: a matrix product over channels)."""
        deconvs = self.output_upscaling[0], self.output_upscaling[3]
        acts = self.output_upscaling[2], self.output_upscaling[4]
        return all(type(a) is nn.GELU for a in acts) and all(
            type(d) is nn.ConvTranspose2d and d.kernel_size == (2, 2) and d.stride == (2, 2) and d.padding == (0, 0)
            and d.bias is not None
            for d in deconvs
        )

    def token_rows(self, high_res_features: list[torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The stride-8 and stride-4 features plus the upscaling's biases as `masks_from_tokens` adds them: rows in
        its sub-pixel order, (B or 1, 4 E*E, C/4) and (B or 1, 16 E*E, C/8) (the biases alone, (1, 1, .), without
        high-res features). They depend on the image only: `ImagePredictor` makes them once per image."""
        feat_s0, feat_s1 = high_res_features if self.use_high_res_features else (None, None)
        deconv1, deconv2 = self.output_upscaling[0], self.output_upscaling[3]
        return _subpixel_rows(feat_s1, deconv1.bias, 1), _subpixel_rows(feat_s0, deconv2.bias, 2)

    def masks_from_tokens(
        self,
        src: torch.Tensor,
        hyper_in: torch.Tensor,
        size: tuple[int, int],
        high_res_features: list[torch.Tensor] | None,
        token_rows: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """`upscale` then the hypernetwork product, on channels-last tokens: src (B, E*E, C), hyper_in (B, K, C/8) ->
        masks (B, K, 4E, 4E). Each transposed convolution is one (C_in, 4 C_out) matrix product whose rows stay in
        (row, column, sub-row, sub-column) order, LayerNorm2d is one `layer_norm` over the last axis, and the masks
        are put in image order once at the end: no pass over the (B, C/8, 4E, 4E) features in NCHW. One prompt at a
        time, into two buffers reused across the prompts: a batch's (B, 16 E*E, C/2) product is tens of megabytes,
        whose fresh pages cost more than the product. The CPU's path, in place: `predict_masks` takes `upscale`
        under autograd, on other devices and when exporting."""
        deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
        h, w = size
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else src.dtype
        m1, m2 = _subpixel_matrix(deconv1).to(dtype), _subpixel_matrix(deconv2).to(dtype)
        rows1, rows0 = token_rows if token_rows is not None else self.token_rows(high_res_features)
        out1 = src.new_empty(h * w, m1.shape[1], dtype=dtype)
        out2 = src.new_empty(h * w * 4, m2.shape[1], dtype=dtype)
        masks = []
        for i, (tokens, hyper) in enumerate(zip(src, hyper_in)):
            x = torch.matmul(tokens.to(dtype), m1, out=out1).view(h * w * 4, -1).add_(rows1[i % len(rows1)])
            x = _gelu_(act1, F.layer_norm(x, x.shape[-1:], norm1.weight, norm1.bias, norm1.eps))
            x = torch.matmul(x.to(dtype), m2, out=out2).view(h * w * 16, -1).add_(rows0[i % len(rows0)])
            masks.append(hyper @ _gelu_(act2, x).T)  # (K, E*E*16), pixels in (i, j, di, dj, ei, ej) order
        return _image_order(torch.stack(masks), h, w)

    def stability_scores(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """IoU between the masks thresholded at +delta and -delta: (B, K, H, W) -> (B, K)."""
        flat = mask_logits.flatten(-2)
        delta = self.cfg.dynamic_multimask_stability_delta
        area_i = torch.sum(flat > delta, dim=-1).float()
        area_u = torch.sum(flat > -delta, dim=-1).float()
        return torch.where(area_u > 0, area_i / area_u, 1.0)

    def _dynamic_multimask_via_stability(
        self, all_masks: torch.Tensor, all_ious: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Single-mask output, falling back to the best multimask output when the single mask is unstable."""
        multi_masks, multi_ious = all_masks[:, 1:], all_ious[:, 1:]
        best = torch.argmax(multi_ious, dim=-1)
        rows = torch.arange(multi_ious.shape[0], device=all_ious.device)
        best_masks = multi_masks[rows, best].unsqueeze(1)
        best_ious = multi_ious[rows, best].unsqueeze(1)
        single_masks, single_ious = all_masks[:, 0:1], all_ious[:, 0:1]
        stable = self.stability_scores(single_masks) >= self.cfg.dynamic_multimask_stability_thresh
        masks = torch.where(stable[..., None, None].expand_as(single_masks), single_masks, best_masks)
        ious = torch.where(stable.expand_as(single_ious), single_ious, best_ious)
        return masks, ious
